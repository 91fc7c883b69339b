"""Fixtures for node tests: a NodeContext factory that records events, and the real local models."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from workflows.nodes import NodeContext


@pytest.fixture(scope="session")
def local_llm():
    """The real SmolLM2; the process-wide cache makes this the same model tests/providers uses."""
    from providers.local_llm import load_local_model

    return load_local_model()


@pytest.fixture(scope="session")
def embedder():
    from providers.embeddings import get_embedder

    return get_embedder()


class Recorder:
    """Collects what a node emits and the artifacts it saves."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.artifacts: dict[str, Any] = {}
        self.on_event = None

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))
        if self.on_event is not None:
            self.on_event(event_type, data)

    def save(self, *, name: str, content: Any, content_type: str | None = None) -> dict[str, Any]:
        self.artifacts[name] = content
        return {"artifact_id": len(self.artifacts), "name": name}

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [data for kind, data in self.events if kind == event_type]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_ctx(workspace, user, recorder):
    """make_ctx(node_type, config, **overrides) -> a NodeContext wired to ``recorder``."""

    def make(node_type: str, config: dict[str, Any], **overrides: Any) -> NodeContext:
        values: dict[str, Any] = {
            "node_id": overrides.pop("node_id", node_type),
            "node_type": node_type,
            "config": config,
            "context": overrides.pop("context", {"inputs": {}, "nodes": {}, "vars": {}}),
            "workspace_id": workspace.pk,
            "user_id": user.pk,
            "cancel_event": overrides.pop("cancel_event", threading.Event()),
            "emit_callback": recorder.emit,
            "artifact_callback": recorder.save,
        }
        values.update(overrides)
        return NodeContext(**values)

    return make
