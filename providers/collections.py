"""Collections: ingest documents, chunk and embed them, and search them through a FAISS index per collection.

The database is the source of truth: each :class:`Chunk` row keeps its embedding as float32 bytes.
The FAISS index on disk (``DATA_DIR/indexes/collection_<id>.faiss``) is a cache of those rows, keyed
by a fingerprint of the chunk set (count and highest id, plus the embedding model). A search checks
the fingerprint with one cheap query and rebuilds the index from the rows when it is missing or
stale — after a deletion, in another process, or after the files were removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, Max
from django.utils import timezone

from accounts.audit import audit
from accounts.choices import Action
from accounts.models import User, Workspace
from accounts.permissions import require

from .embeddings import DEFAULT_EMBEDDING_MODEL, EmbeddingModelError, check_model_name, embed_query, embed_texts
from .models import Chunk, Collection, Document

logger = logging.getLogger(__name__)

MAX_DOCUMENT_CHARS = 5_000_000
TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".rst", ".csv", ".json", ".html", ".htm", ".log", ".text", ""}


# -- chunking ----------------------------------------------------------------------------------------

_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


def chunk_text(text: str, *, chunk_size: int, overlap: int) -> list[str]:
    """Split ``text`` into pieces of at most ``chunk_size`` characters, consecutive pieces sharing
    about ``overlap`` characters. Cuts prefer a paragraph, line, sentence, then word boundary."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    overlap = max(0, min(overlap, chunk_size // 2))
    text = text.strip()
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + chunk_size, len(text))
        if end < len(text):
            window = text[start:end]
            for separator in _BREAKS:
                at = window.rfind(separator)
                if at >= chunk_size // 2:
                    end = start + at + len(separator)
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= len(text):
            break
        next_start = max(end - overlap, start + 1)
        if overlap:
            # Begin the overlap on a word boundary rather than mid-word.
            space = text.find(" ", next_start, end)
            if space != -1:
                next_start = space + 1
        start = next_start
    return chunks


# -- reading uploads ---------------------------------------------------------------------------------


def extract_text(*, content: bytes, filename: str = "", content_type: str = "") -> str:
    """Text from an upload: plain text and Markdown as UTF-8, PDF through pypdf."""
    suffix = Path(filename).suffix.lower()
    if suffix == ".pdf" or content_type == "application/pdf" or content[:5] == b"%PDF-":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(io.BytesIO(content))
            pages = [(page.extract_text() or "").strip() for page in reader.pages]
        except (PdfReadError, ValueError, KeyError, OSError) as exc:
            raise ValidationError({"file": f"Could not read the PDF: {exc}"}) from exc
        text = "\n\n".join(page for page in pages if page)
        if not text.strip():
            raise ValidationError({"file": "The PDF has no extractable text (is it a scan?)."})
        return text
    if suffix not in TEXT_EXTENSIONS or (not suffix and content_type and not content_type.startswith("text/")):
        raise ValidationError(
            {"file": f"Unsupported file type {suffix or content_type!r}: upload text, Markdown or PDF."}
        )
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError({"file": "The file is not UTF-8 text."}) from exc


# -- services ----------------------------------------------------------------------------------------


def _validate_settings(*, name: str, embedding_model: str, chunk_size: int, chunk_overlap: int) -> None:
    errors: dict[str, str] = {}
    if not name or not name.strip():
        errors["name"] = "A collection needs a name."
    elif len(name) > 100:
        errors["name"] = "At most 100 characters."
    if not 50 <= chunk_size <= 20_000:
        errors["chunk_size"] = "Between 50 and 20000 characters."
    if chunk_overlap >= chunk_size or chunk_overlap < 0:
        errors["chunk_overlap"] = "Must be at least 0 and smaller than the chunk size."
    try:
        check_model_name(embedding_model)
    except EmbeddingModelError as exc:
        errors["embedding_model"] = str(exc)
    if errors:
        raise ValidationError(errors)


def collection_create(
    *,
    workspace: Workspace,
    user: User | None,
    name: str,
    description: str = "",
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    chunk_size: int = 800,
    chunk_overlap: int = 100,
    check_permission: bool = True,
) -> Collection:
    if check_permission:
        require(user, workspace, Action.EDIT)
    name = (name or "").strip()
    _validate_settings(name=name, embedding_model=embedding_model, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    try:
        with transaction.atomic():
            collection = Collection.objects.create(
                workspace=workspace,
                name=name,
                description=description,
                embedding_model=embedding_model,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
                created_by=user if getattr(user, "is_authenticated", False) else None,
            )
            audit(action="collection.created", actor=user, workspace=workspace, target=collection)
    except IntegrityError as exc:
        raise ValidationError({"name": f"A collection named {name!r} already exists in this workspace."}) from exc
    return collection


def collection_update(
    *, collection: Collection, user: User | None, check_permission: bool = True, **changes: Any
) -> Collection:
    """Change name, description or chunking/embedding settings; new settings re-chunk every document."""
    if check_permission:
        require(user, collection.workspace_id, Action.EDIT)
    allowed = {"name", "description", "embedding_model", "chunk_size", "chunk_overlap"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError({key: "This field cannot be changed." for key in unknown})
    values = {key: getattr(collection, key) for key in allowed} | changes
    values["name"] = (values["name"] or "").strip()
    _validate_settings(
        name=values["name"],
        embedding_model=values["embedding_model"],
        chunk_size=int(values["chunk_size"]),
        chunk_overlap=int(values["chunk_overlap"]),
    )
    reindex = any(values[key] != getattr(collection, key) for key in ("embedding_model", "chunk_size", "chunk_overlap"))
    for key, value in values.items():
        setattr(collection, key, value)
    prepared = []
    if reindex:
        prepared = [(doc, _prepare_chunks(collection, doc.text, doc.metadata)) for doc in collection.documents.all()]
    try:
        with transaction.atomic():
            collection.save()
            if reindex:
                Chunk.objects.filter(collection=collection).delete()
                for document, (texts, vectors) in prepared:
                    _store_chunks(collection, document, texts, vectors)
            audit(
                action="collection.updated",
                actor=user,
                workspace=collection.workspace_id,
                target=collection,
                data={"fields": sorted(changes), "reindexed": reindex},
            )
    except IntegrityError as exc:
        raise ValidationError({"name": f"A collection named {values['name']!r} already exists."}) from exc
    return collection


def collection_delete(*, collection: Collection, user: User | None, check_permission: bool = True) -> None:
    if check_permission:
        require(user, collection.workspace_id, Action.EDIT)
    collection_id = collection.pk
    with transaction.atomic():
        audit(action="collection.deleted", actor=user, workspace=collection.workspace_id, target=collection)
        collection.delete()
    index_forget(collection_id)


def _prepare_chunks(collection: Collection, text: str, metadata: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    texts = chunk_text(text, chunk_size=collection.chunk_size, overlap=collection.chunk_overlap)
    return texts, embed_texts(texts, model_name=collection.embedding_model)


def _store_chunks(collection: Collection, document: Document, texts: list[str], vectors: np.ndarray) -> None:
    Chunk.objects.bulk_create(
        [
            Chunk(
                collection=collection,
                document=document,
                index=i,
                text=piece,
                metadata=dict(document.metadata or {}),
                embedding=vectors[i].astype(np.float32).tobytes(),
            )
            for i, piece in enumerate(texts)
        ],
        batch_size=500,
    )


def document_add(
    *,
    collection: Collection,
    user: User | None,
    text: str | None = None,
    file: Any = None,
    title: str = "",
    source: str = "",
    metadata: dict[str, Any] | None = None,
    check_permission: bool = True,
) -> Document:
    """Add a document from ``text`` or an uploaded ``file`` (text, Markdown or PDF), chunked and embedded.

    Adding the same text again returns the existing document. ``check_permission=False`` is for the
    admin, where Django's staff permissions gate the page.
    """
    if check_permission:
        require(user, collection.workspace_id, Action.EDIT)
    metadata = metadata or {}
    if not isinstance(metadata, dict):
        raise ValidationError({"metadata": "Metadata must be a JSON object."})
    if file is not None:
        filename = getattr(file, "name", "") or ""
        content = file.read() if hasattr(file, "read") else bytes(file)
        text = extract_text(content=content, filename=filename, content_type=getattr(file, "content_type", "") or "")
        title = title or Path(filename).stem
        source = source or Path(filename).name
    if text is None or not text.strip():
        raise ValidationError({"text": "The document is empty."})
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValidationError({"text": f"The document is longer than {MAX_DOCUMENT_CHARS:,} characters."})
    content_hash = hashlib.sha256(text.encode()).hexdigest()
    existing = Document.objects.filter(collection=collection, content_hash=content_hash).first()
    if existing is not None:
        return existing
    # Embedding is slow; do it before taking the write transaction.
    texts, vectors = _prepare_chunks(collection, text, metadata)
    with transaction.atomic():
        document = Document.objects.create(
            collection=collection,
            title=title[:300],
            source=source[:1000],
            text=text,
            metadata=metadata,
            content_hash=content_hash,
        )
        _store_chunks(collection, document, texts, vectors)
        Collection.objects.filter(pk=collection.pk).update(updated_at=timezone.now())
        audit(
            action="document.added",
            actor=user,
            workspace=collection.workspace_id,
            target=document,
            data={"collection": collection.name, "chunks": len(texts)},
        )
    return document


def document_upload(
    *,
    collection: Collection,
    user: User | None,
    file: Any,
    title: str = "",
    source: str = "",
    metadata: dict[str, Any] | None = None,
    check_permission: bool = True,
) -> Document:
    """Add an uploaded text, Markdown or PDF file (the pages' name for :func:`document_add` with a file)."""
    return document_add(
        collection=collection,
        user=user,
        file=file,
        title=title,
        source=source,
        metadata=metadata,
        check_permission=check_permission,
    )


def document_delete(*, document: Document, user: User | None, check_permission: bool = True) -> None:
    collection = document.collection
    if check_permission:
        require(user, collection.workspace_id, Action.EDIT)
    with transaction.atomic():
        audit(
            action="document.deleted",
            actor=user,
            workspace=collection.workspace_id,
            target=document,
            data={"collection": collection.name},
        )
        document.delete()
        Collection.objects.filter(pk=collection.pk).update(updated_at=timezone.now())


# -- the FAISS index ---------------------------------------------------------------------------------


@dataclass
class LoadedIndex:
    fingerprint: str
    index: Any  # faiss.IndexIDMap2 over IndexFlatIP
    metadata: dict[int, dict[str, Any]]


_indexes: dict[int, LoadedIndex] = {}
_index_lock = threading.Lock()


def index_dir() -> Path:
    path = Path(settings.DATA_DIR) / "indexes"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _paths(collection_id: int) -> tuple[Path, Path]:
    base = index_dir() / f"collection_{collection_id}"
    return base.with_suffix(".faiss"), base.with_suffix(".json")


def index_fingerprint(collection: Collection) -> str:
    stats = Chunk.objects.filter(collection_id=collection.pk).aggregate(count=Count("id"), top=Max("id"))
    return f"{stats['count']}:{stats['top'] or 0}:{collection.embedding_model}"


def index_forget(collection_id: int) -> None:
    with _index_lock:
        _indexes.pop(collection_id, None)
    for path in _paths(collection_id):
        path.unlink(missing_ok=True)


def _build(collection: Collection, fingerprint: str) -> LoadedIndex:
    import faiss

    rows = Chunk.objects.filter(collection_id=collection.pk).values_list("id", "embedding", "metadata")
    ids: list[int] = []
    vectors: list[np.ndarray] = []
    metadata: dict[int, dict[str, Any]] = {}
    for chunk_id, embedding, meta in rows.iterator(chunk_size=2000):
        ids.append(chunk_id)
        vectors.append(np.frombuffer(bytes(embedding), dtype=np.float32))
        metadata[chunk_id] = meta or {}
    dimension = len(vectors[0]) if vectors else embed_texts([], model_name=collection.embedding_model).shape[1]
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    if vectors:
        index.add_with_ids(np.vstack(vectors).astype(np.float32), np.asarray(ids, dtype=np.int64))
    faiss_path, meta_path = _paths(collection.pk)
    suffix = f".{os.getpid()}.{threading.get_ident()}.tmp"
    faiss.write_index(index, str(faiss_path) + suffix)
    Path(str(meta_path) + suffix).write_text(
        json.dumps({"fingerprint": fingerprint, "metadata": {str(k): v for k, v in metadata.items()}})
    )
    os.replace(str(faiss_path) + suffix, faiss_path)
    os.replace(str(meta_path) + suffix, meta_path)
    logger.info("Rebuilt the index of collection %s (%d chunks)", collection.pk, len(ids))
    return LoadedIndex(fingerprint, index, metadata)


def _read_from_disk(collection: Collection, fingerprint: str) -> LoadedIndex | None:
    import faiss

    faiss_path, meta_path = _paths(collection.pk)
    try:
        stored = json.loads(meta_path.read_text())
        if stored.get("fingerprint") != fingerprint:
            return None
        index = faiss.read_index(str(faiss_path))
    except (OSError, ValueError, RuntimeError):
        return None
    return LoadedIndex(fingerprint, index, {int(k): v for k, v in stored.get("metadata", {}).items()})


def index_load(collection: Collection) -> LoadedIndex:
    """The collection's index, from memory, else disk, else rebuilt from the Chunk rows."""
    fingerprint = index_fingerprint(collection)
    loaded = _indexes.get(collection.pk)
    if loaded is not None and loaded.fingerprint == fingerprint:
        return loaded
    with _index_lock:
        loaded = _indexes.get(collection.pk)
        if loaded is None or loaded.fingerprint != fingerprint:
            loaded = _read_from_disk(collection, fingerprint) or _build(collection, fingerprint)
            _indexes[collection.pk] = loaded
        return loaded


# -- search ------------------------------------------------------------------------------------------

_OPERATORS = {
    "$eq": lambda have, want: have == want,
    "$ne": lambda have, want: have != want,
    "$in": lambda have, want: have in want,
    "$nin": lambda have, want: have not in want,
    "$gt": lambda have, want: have is not None and have > want,
    "$gte": lambda have, want: have is not None and have >= want,
    "$lt": lambda have, want: have is not None and have < want,
    "$lte": lambda have, want: have is not None and have <= want,
    "$exists": lambda have, want: (have is not None) == bool(want),
}


def validate_filters(filters: Any) -> None:
    if filters in (None, {}):
        return
    if not isinstance(filters, dict):
        raise ValidationError({"filters": "Filters must be an object of metadata key → value."})
    for key, condition in filters.items():
        if isinstance(condition, dict):
            for op, want in condition.items():
                if op not in _OPERATORS:
                    raise ValidationError(
                        {"filters": f"Unknown operator {op!r} for {key!r}; use {', '.join(_OPERATORS)}."}
                    )
                if op in ("$in", "$nin") and not isinstance(want, list):
                    raise ValidationError({"filters": f"{op} for {key!r} needs a list."})


def metadata_matches(metadata: dict[str, Any], filters: dict[str, Any]) -> bool:
    for key, condition in filters.items():
        have = metadata.get(key)
        try:
            if isinstance(condition, dict):
                if not all(_OPERATORS[op](have, want) for op, want in condition.items()):
                    return False
            elif isinstance(condition, list):
                if have not in condition:
                    return False
            elif have != condition:
                return False
        except TypeError:  # comparing a number with a string: no match rather than an error
            return False
    return True


def collection_search(
    *,
    collection: Collection,
    query: str,
    top_k: int = 4,
    score_threshold: float | None = None,
    filters: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The ``top_k`` chunks most similar to ``query`` (cosine score, best first), filtered by metadata."""
    if not isinstance(query, str) or not query.strip():
        raise ValidationError({"query": "The search query is empty."})
    if not 1 <= int(top_k) <= 200:
        raise ValidationError({"top_k": "Between 1 and 200."})
    validate_filters(filters)
    loaded = index_load(collection)
    total = loaded.index.ntotal
    if total == 0:
        return []
    vector = embed_query(query, model_name=collection.embedding_model)
    if filters:
        allowed = [chunk_id for chunk_id, meta in loaded.metadata.items() if metadata_matches(meta, filters)]
        if not allowed:
            return []
        scores, ids = _search_subset(loaded.index, vector, allowed, min(int(top_k), len(allowed)))
    else:
        scores, ids = loaded.index.search(vector, min(int(top_k), total))
    hits = [
        (int(chunk_id), float(score))
        for chunk_id, score in zip(ids[0], scores[0], strict=True)
        if chunk_id != -1 and (score_threshold is None or score >= score_threshold)
    ]
    if not hits:
        return []
    chunks = {
        chunk.pk: chunk
        for chunk in Chunk.objects.filter(pk__in=[chunk_id for chunk_id, _ in hits])
        .select_related("document")
        .only("id", "index", "text", "metadata", "document__id", "document__title", "document__source")
    }
    results = []
    for chunk_id, score in hits:
        chunk = chunks.get(chunk_id)
        if chunk is None:  # deleted between the index read and now
            continue
        results.append(
            {
                "rank": len(results) + 1,
                "score": round(score, 6),
                "text": chunk.text,
                "metadata": chunk.metadata,
                "source": chunk.document.source,
                "title": chunk.document.title,
                "document_id": chunk.document.pk,
                "chunk_id": chunk.pk,
                "chunk_index": chunk.index,
            }
        )
    return results


def _search_subset(index: Any, vector: np.ndarray, allowed: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
    return index.search(vector, k, params=faiss.SearchParameters(sel=selector))


def collection_get(*, workspace_id: int, ref: int | str) -> Collection:
    """A collection of the workspace by id or name (``ValidationError`` when there is none)."""
    queryset = Collection.objects.filter(workspace_id=workspace_id)
    collection = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        collection = queryset.filter(pk=int(ref)).first()
    if collection is None and isinstance(ref, str):
        collection = queryset.filter(name=ref.strip()).first() or queryset.filter(name__iexact=ref.strip()).first()
    if collection is None:
        raise ValidationError({"collection": f"No collection {ref!r} in this workspace."})
    return collection


# -- demo --------------------------------------------------------------------------------------------

DEMO_COLLECTION_NAME = "Graphwright guide"

DEMO_DOCUMENTS: list[dict[str, Any]] = [
    {
        "title": "What Graphwright is",
        "source": "guide/overview.md",
        "metadata": {"topic": "overview"},
        "text": (
            "Graphwright is an AI workflow builder and runner. A workflow is a graph of nodes such as LLM calls, "
            "HTTP requests, vector search, database writes, branches, loops and approvals. Workflows run on "
            "demand, from a webhook, on a schedule or through the API. Every run is durable and observable node "
            "by node, its events stream live, and a failed run can be resumed from the failed node."
        ),
    },
    {
        "title": "Local models",
        "source": "guide/models.md",
        "metadata": {"topic": "models"},
        "text": (
            "Graphwright works without any API key. The default language model is SmolLM2-135M-Instruct, which "
            "runs locally on the CPU through transformers, and embeddings come from the all-MiniLM-L6-v2 "
            "sentence-transformers model. Remote providers such as OpenAI, Anthropic, Gemini, DeepSeek and "
            "Ollama can be used as soon as a credential with an API key is saved in the vault."
        ),
    },
    {
        "title": "Collections and vector search",
        "source": "guide/collections.md",
        "metadata": {"topic": "search"},
        "text": (
            "A collection stores documents for retrieval. Uploaded text, Markdown and PDF files are split into "
            "overlapping chunks, each chunk is embedded, and a FAISS index per collection answers similarity "
            "searches. The vector_search node returns the best matching chunks with their scores and sources, "
            "ready to be placed in a prompt."
        ),
    },
    {
        "title": "Budgets and the token ledger",
        "source": "guide/budgets.md",
        "metadata": {"topic": "budgets"},
        "text": (
            "Every LLM call is recorded in the token ledger with its provider, model, input and output tokens "
            "and an estimated cost. A run can carry a token budget and each user can have a monthly token "
            "budget. When a call would exceed a budget, the node fails before the call is made."
        ),
    },
    {
        "title": "Retries and resuming",
        "source": "guide/reliability.md",
        "metadata": {"topic": "reliability"},
        "text": (
            "Nodes can retry with exponential backoff, time out, or route errors to another branch. If a "
            "worker process dies, its lease on the run expires and the reaper hands the run to another worker, "
            "which skips the nodes that already finished. A failed run can be rerun from the failed node, "
            "reusing the outputs of the nodes before it."
        ),
    },
    {
        "title": "Agents",
        "source": "guide/agents.md",
        "metadata": {"topic": "agents"},
        "text": (
            "The agent node lets a language model call tools: other workflows of the workspace, HTTP request "
            "presets and vector search over a collection. Each tool call and its result appear as events of "
            "the run, the number of steps is capped, and a session key keeps the conversation across runs."
        ),
    },
]


def demo_collection_seed(*, workspace: Workspace, user: User | None) -> Collection:
    """Create (or complete) the small demo collection about Graphwright itself. Safe to call again."""
    collection = Collection.objects.filter(workspace=workspace, name=DEMO_COLLECTION_NAME).first()
    if collection is None:
        collection = collection_create(
            workspace=workspace,
            user=user,
            name=DEMO_COLLECTION_NAME,
            description="How Graphwright works: the demo RAG workflow searches this collection.",
            chunk_size=600,
            chunk_overlap=80,
        )
    for item in DEMO_DOCUMENTS:
        document_add(collection=collection, user=user, **item)
    return collection
