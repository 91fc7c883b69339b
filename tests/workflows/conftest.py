"""Workflow fixtures: small test-only node types, so these tests do not depend on the real ones."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.nodes import NodeType, _registry, autodiscover, register
from workflows.nodes.base import ConfigError


class EchoNode(NodeType):
    """Returns its rendered ``value``."""

    name = "test_echo"
    label = "Echo (tests)"
    config_schema = {
        "type": "object",
        "properties": {"value": {}, "delay": {"type": "number", "minimum": 0}},
        "additionalProperties": False,
    }

    def execute(self, ctx) -> Any:
        return ctx.render(ctx.config.get("value"))


class BranchyNode(NodeType):
    """Offers ``yes``/``no``, plus one branch per entry of ``cases``."""

    name = "test_branchy"
    label = "Branchy (tests)"
    branches = ("yes", "no")
    config_schema = {
        "type": "object",
        "properties": {"cases": {"type": "array", "items": {"type": "string"}}, "url": {"type": "string"}},
        "additionalProperties": False,
    }

    def branches_for(self, config: dict[str, Any]) -> tuple[str, ...]:
        return (*self.branches, *config.get("cases", []))

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        if "url" in config and not config["url"].startswith("http"):
            return [ConfigError("config.url", "must start with http")]
        return []


@pytest.fixture(autouse=True)
def test_node_types():
    """Register the test node types for one test (and leave the registry as it was)."""
    autodiscover()  # the real types first, so restoring the registry keeps them
    saved = dict(_registry)
    for cls in (EchoNode, BranchyNode):
        _registry.pop(cls.name, None)
        register(cls)
    yield
    _registry.clear()
    _registry.update(saved)


def node(node_id: str, type_: str = "test_echo", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": type_, **extra}


def edge(source: str, target: str, branch: str | None = None) -> dict[str, Any]:
    return {"source": source, "target": target, **({"branch": branch} if branch else {})}


def doc(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"format": "graphwright/v1", "name": "Test flow", "nodes": nodes, "edges": edges or [], **extra}


@pytest.fixture
def linear_doc() -> dict[str, Any]:
    """a → b → c, with a branching node in the middle."""
    return doc(
        [
            node("a", config={"value": "{{ inputs.x }}"}, position={"x": 0, "y": 0}),
            node("b", "test_branchy", config={"cases": ["big"]}, name="Decide"),
            node("c", retry={"max_attempts": 3, "backoff": "exponential", "initial_delay": 0.5}, timeout=5),
            node("d", on_error="branch"),
            node("e"),
        ],
        [edge("a", "b"), edge("b", "c", "yes"), edge("b", "d", "big"), edge("d", "e", "error"), edge("c", "e")],
        inputs={"x": {"type": "string", "required": True}},
        vars={"greeting": "hi"},
        tags=["test"],
        description="A test workflow",
        settings={"timeout": 60, "max_concurrent_runs": 2},
    )
