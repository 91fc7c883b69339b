"""Vector search over a 10,000-chunk collection: ``collection_search`` versus bare encode + FAISS.

The collection lives in a throw-away test database. Its chunks carry unit vectors (random, from a
fixed seed: the search cost does not depend on what the vectors mean), so the bench does not spend
minutes embedding 10,000 texts. Both sides encode the query with the same MiniLM model and search
the same vectors with an exact inner-product index; ours also checks the index is fresh (one query)
and loads the hits' rows. Keys: ``vector.search_ms_p50``, ``vector.bare_search_ms_p50``,
``vector.search_ratio`` (ours / bare, target ≤ 1.2).
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHUNKS = int(os.environ.get("BENCH_VECTOR_CHUNKS", "10000"))
QUERIES = int(os.environ.get("BENCH_VECTOR_QUERIES", "60"))
TOP_K = 5
TOPICS = ["invoices", "refunds", "shipping", "passwords", "webhooks", "schedules", "budgets", "agents"]


def _seed(dimension: int):
    import numpy as np

    from accounts.services import personal_workspace, user_create
    from providers.collections import collection_create
    from providers.models import Chunk, Document

    user = user_create(username="bench-vector", password="bench password 123")
    collection = collection_create(workspace=personal_workspace(user), user=user, name="bench")
    rng = np.random.default_rng(42)
    vectors = rng.standard_normal((CHUNKS, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    per_document = 50
    for start in range(0, CHUNKS, per_document):
        topic = TOPICS[(start // per_document) % len(TOPICS)]
        document = Document.objects.create(
            collection=collection,
            title=f"Doc {start // per_document}",
            source=f"doc{start}.md",
            text=f"About {topic}.",
            metadata={"topic": topic},
        )
        Chunk.objects.bulk_create(
            [
                Chunk(
                    collection=collection,
                    document=document,
                    index=i - start,
                    metadata={"topic": topic},
                    text=f"Chunk {i} about {topic}.",
                    embedding=vectors[i].tobytes(),
                )
                for i in range(start, min(start + per_document, CHUNKS))
            ]
        )
    return collection, vectors


def _p50(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def run(results: dict[str, float]) -> None:
    import django

    django.setup()
    import faiss
    from django.db import connection

    from providers.collections import collection_search, index_load
    from providers.embeddings import embed_query, embedding_dimension, get_embedder

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        model = get_embedder()
        collection, vectors = _seed(embedding_dimension(model))
        started = time.perf_counter()
        index_load(collection)
        results["vector.index_build_ms"] = round((time.perf_counter() - started) * 1000, 1)
        bare = faiss.IndexFlatIP(vectors.shape[1])
        bare.add(vectors)
        queries = [f"how do I handle {TOPICS[i % len(TOPICS)]} number {i}" for i in range(QUERIES)]
        collection_search(collection=collection, query="warm up", top_k=TOP_K)
        embed_query("warm up")
        ours, plain = [], []
        for query in queries:  # alternate, so noise hits both alike
            started = time.perf_counter()
            hits = collection_search(collection=collection, query=query, top_k=TOP_K)
            ours.append(time.perf_counter() - started)
            assert len(hits) == TOP_K
            started = time.perf_counter()
            bare.search(embed_query(query), TOP_K)
            plain.append(time.perf_counter() - started)
        results["vector.search_ms_p50"] = round(_p50(ours), 3)
        results["vector.bare_search_ms_p50"] = round(_p50(plain), 3)
        results["vector.search_ratio"] = round(_p50(ours) / _p50(plain), 3)
        print(
            f"   {CHUNKS} chunks: ours p50 {results['vector.search_ms_p50']} ms, "
            f"bare p50 {results['vector.bare_search_ms_p50']} ms"
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
