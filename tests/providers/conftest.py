"""Fixtures for the providers area: the real local LLM and embedding model, loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_llm():
    """The real SmolLM2 (converted once under DATA_DIR), shared by every test of the session."""
    from providers.local_llm import load_local_model

    return load_local_model()


@pytest.fixture(scope="session")
def embedder():
    """The real MiniLM sentence-transformers model."""
    from providers.embeddings import get_embedder

    return get_embedder()
