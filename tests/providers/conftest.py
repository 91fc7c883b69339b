"""Fixtures for the providers tests: vault, credentials, SSRF guard, and the real local models."""

from __future__ import annotations

import pytest

from providers import vault

from .loopback import start_server


@pytest.fixture
def http_server():
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def allow_loopback(settings):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    return settings


@pytest.fixture
def keys(settings):
    """Two fresh keys; ENCRYPTION_KEYS starts with only the first."""
    first, second = vault.generate_key(), vault.generate_key()
    settings.ENCRYPTION_KEYS = [first]
    return first, second


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
