"""Collections with the real MiniLM model and real FAISS indexes on disk."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.choices import Role
from accounts.models import AuditLog
from providers import collections as svc
from providers.models import Chunk, Collection, Document

CORPUS = [
    (
        "Baking bread",
        {"topic": "cooking", "year": 2021},
        "To bake bread, mix flour, water, yeast and salt, knead "
        "the dough, let it rise for two hours and bake it in a hot oven until the crust is golden.",
    ),
    (
        "Rust ownership",
        {"topic": "programming", "year": 2023},
        "In Rust every value has a single owner; when the "
        "owner goes out of scope the value is dropped. Borrowing lets code use a value without taking ownership.",
    ),
    (
        "Volcanoes",
        {"topic": "geology", "year": 2019},
        "A volcano erupts when molten rock called magma rises "
        "through the crust. Lava flows, ash clouds and pyroclastic flows are the main hazards of an eruption.",
    ),
    (
        "Python generators",
        {"topic": "programming", "year": 2020},
        "A Python generator is a function that uses "
        "yield to produce a sequence of values lazily, one at a time, instead of building a whole list in memory.",
    ),
]


@pytest.fixture
def collection(workspace, user, embedder):
    return svc.collection_create(workspace=workspace, user=user, name="Notes", chunk_size=300, chunk_overlap=40)


@pytest.fixture
def seeded(collection, user):
    for title, metadata, text in CORPUS:
        svc.document_add(
            collection=collection, user=user, title=title, source=f"{title}.md", text=text, metadata=metadata
        )
    return collection


def test_chunking_respects_size_and_overlap():
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = svc.chunk_text(text, chunk_size=200, overlap=50)
    assert len(chunks) > 5
    assert all(len(chunk) <= 200 for chunk in chunks)
    # Consecutive chunks overlap: the start of one appears at the end of the previous one.
    for previous, current in itertools.pairwise(chunks):
        assert current[:15] in previous
    joined = " ".join(chunks)
    assert "Sentence number 0 " in joined and "Sentence number 199 " in joined


def test_chunking_short_text_is_one_chunk():
    assert svc.chunk_text("  hello world  ", chunk_size=100, overlap=10) == ["hello world"]


@pytest.mark.django_db
def test_document_add_stores_chunks_with_float32_embeddings(collection, user):
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 60 for i in range(5))
    document = svc.document_add(collection=collection, user=user, text=text, title="Long", metadata={"k": "v"})
    chunks = list(document.chunks.all())
    assert len(chunks) >= 4
    vector = np.frombuffer(bytes(chunks[0].embedding), dtype=np.float32)
    assert vector.shape == (384,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    assert chunks[0].metadata == {"k": "v"}
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert AuditLog.objects.filter(action="document.added", target_id=str(document.pk)).exists()
    # The same text again is the same document, not a duplicate.
    again = svc.document_add(collection=collection, user=user, text=text)
    assert again.pk == document.pk
    assert Document.objects.filter(collection=collection).count() == 1


@pytest.mark.django_db
def test_search_ranks_relevant_chunk_first(seeded):
    results = svc.collection_search(collection=seeded, query="How do I make a loaf of bread?", top_k=3)
    assert results[0]["title"] == "Baking bread"
    assert results[0]["rank"] == 1 and results[0]["source"] == "Baking bread.md"
    assert results[0]["score"] > results[1]["score"]
    results = svc.collection_search(collection=seeded, query="what happens when magma erupts", top_k=2)
    assert results[0]["title"] == "Volcanoes"
    assert {"text", "metadata", "document_id", "chunk_id", "score"} <= set(results[0])


@pytest.mark.django_db
def test_metadata_filters(seeded):
    results = svc.collection_search(
        collection=seeded, query="How do I make a loaf of bread?", top_k=5, filters={"topic": "programming"}
    )
    assert results and {r["metadata"]["topic"] for r in results} == {"programming"}
    results = svc.collection_search(collection=seeded, query="values", top_k=5, filters={"year": {"$gte": 2021}})
    assert {r["title"] for r in results} == {"Baking bread", "Rust ownership"}
    results = svc.collection_search(collection=seeded, query="x", top_k=5, filters={"topic": ["geology", "cooking"]})
    assert {r["title"] for r in results} == {"Volcanoes", "Baking bread"}
    assert svc.collection_search(collection=seeded, query="x", filters={"topic": "nothing"}) == []
    with pytest.raises(ValidationError):
        svc.collection_search(collection=seeded, query="x", filters={"year": {"$near": 1}})


@pytest.mark.django_db
def test_score_threshold(seeded):
    everything = svc.collection_search(collection=seeded, query="Rust borrowing and ownership", top_k=4)
    threshold = (everything[0]["score"] + everything[1]["score"]) / 2
    filtered = svc.collection_search(
        collection=seeded, query="Rust borrowing and ownership", top_k=4, score_threshold=threshold
    )
    assert [r["title"] for r in filtered] == ["Rust ownership"]


@pytest.mark.django_db
def test_index_rebuilt_after_deletion_and_when_files_are_missing(seeded, user):
    first = svc.collection_search(collection=seeded, query="bread dough yeast", top_k=1)
    assert first[0]["title"] == "Baking bread"
    faiss_path, meta_path = svc._paths(seeded.pk)
    assert faiss_path.exists() and meta_path.exists()

    svc.document_delete(document=Document.objects.get(title="Baking bread"), user=user)
    after = svc.collection_search(collection=seeded, query="bread dough yeast", top_k=4)
    assert "Baking bread" not in {r["title"] for r in after}
    assert len(after) == 3
    assert svc.index_load(seeded).index.ntotal == Chunk.objects.filter(collection=seeded).count()

    # Remove the files and the in-process copy: the index comes back from the Chunk rows.
    svc.index_forget(seeded.pk)
    assert not faiss_path.exists()
    again = svc.collection_search(collection=seeded, query="magma", top_k=1)
    assert again[0]["title"] == "Volcanoes"
    assert faiss_path.exists()


@pytest.mark.django_db
def test_stale_index_on_disk_is_not_used(seeded, user):
    svc.collection_search(collection=seeded, query="bread", top_k=1)
    svc._indexes.clear()  # as if another process: only the disk copy is left
    svc.document_add(collection=seeded, user=user, text="Sourdough uses a starter of wild yeast.", title="Sourdough")
    results = svc.collection_search(collection=seeded, query="sourdough starter", top_k=1)
    assert results[0]["title"] == "Sourdough"


@pytest.mark.django_db
def test_upload_markdown_and_pdf(collection, user):
    markdown = SimpleUploadedFile(
        "guide.md", b"# Title\n\nGlaciers carve valleys slowly.", content_type="text/markdown"
    )
    document = svc.document_add(collection=collection, user=user, file=markdown)
    assert document.title == "guide" and document.source == "guide.md"
    assert "Glaciers" in document.text

    pdf = SimpleUploadedFile("facts.pdf", _pdf_bytes("Penguins live in the southern hemisphere."))
    document = svc.document_add(collection=collection, user=user, file=pdf, metadata={"kind": "pdf"})
    assert "Penguins live in the southern hemisphere" in document.text
    results = svc.collection_search(collection=collection, query="where do penguins live", top_k=1)
    assert results[0]["document_id"] == document.pk

    with pytest.raises(ValidationError) as error:
        svc.document_add(collection=collection, user=user, file=SimpleUploadedFile("x.exe", b"MZ\x00\x01"))
    assert "file" in error.value.message_dict
    with pytest.raises(ValidationError):
        svc.document_add(collection=collection, user=user, file=SimpleUploadedFile("bad.pdf", b"%PDF-1.4 broken"))


def _pdf_bytes(text: str) -> bytes:
    """A one-page PDF with ``text``, written by hand (no PDF library writes text)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


@pytest.mark.django_db
def test_validation_and_permissions(workspace, user, make_member, collection):
    with pytest.raises(ValidationError) as error:
        svc.collection_create(workspace=workspace, user=user, name="Notes")
    assert "name" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        svc.collection_create(workspace=workspace, user=user, name="X", chunk_size=100, chunk_overlap=100)
    assert "chunk_overlap" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        svc.collection_create(workspace=workspace, user=user, name="Y", embedding_model="some/remote-model")
    assert "embedding_model" in error.value.message_dict
    with pytest.raises(ValidationError):
        svc.document_add(collection=collection, user=user, text="   ")
    viewer = make_member(Role.VIEWER)
    with pytest.raises(PermissionDenied):
        svc.document_add(collection=collection, user=viewer, text="hello")
    with pytest.raises(PermissionDenied):
        svc.collection_create(workspace=workspace, user=viewer, name="Mine")
    with pytest.raises(ValidationError):
        svc.collection_search(collection=collection, query="  ")


@pytest.mark.django_db
def test_update_rechunks_and_delete_removes_index(seeded, user):
    before = Chunk.objects.filter(collection=seeded).count()
    svc.collection_update(collection=seeded, user=user, chunk_size=60, chunk_overlap=10)
    assert Chunk.objects.filter(collection=seeded).count() > before
    assert svc.collection_search(collection=seeded, query="magma eruption", top_k=1)[0]["title"] == "Volcanoes"
    faiss_path, _ = svc._paths(seeded.pk)
    assert faiss_path.exists()
    svc.collection_delete(collection=seeded, user=user)
    assert not Collection.objects.filter(pk=seeded.pk).exists()
    assert not faiss_path.exists()


@pytest.mark.django_db
def test_demo_collection_seed_is_idempotent(workspace, user, embedder):
    collection = svc.demo_collection_seed(workspace=workspace, user=user)
    count = collection.documents.count()
    assert count >= 5
    assert svc.demo_collection_seed(workspace=workspace, user=user).pk == collection.pk
    assert collection.documents.count() == count
    hits = svc.collection_search(collection=collection, query="Which local language model is the default?", top_k=1)
    assert hits[0]["source"] == "guide/models.md"
    assert svc.collection_get(workspace_id=workspace.pk, ref=svc.DEMO_COLLECTION_NAME).pk == collection.pk
    assert svc.collection_get(workspace_id=workspace.pk, ref=str(collection.pk)).pk == collection.pk
    with pytest.raises(ValidationError):
        svc.collection_get(workspace_id=workspace.pk, ref="missing")
