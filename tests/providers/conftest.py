"""Fixtures for the providers tests (vault, credentials, SSRF guard)."""

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
