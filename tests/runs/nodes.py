"""Node types only the engine tests use: real node classes, registered for the duration of a test."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from workflows.nodes import NodeCancelled, NodeContext, NodeError, NodeType

# Named events a test sets to release a blocked node.
GATES: dict[str, threading.Event] = {}
# (node_id, run_id, start, end) of every test_sleep execution, for the overlap test.
SPANS: list[tuple[str, int, float, float]] = []


class SleepNode(NodeType):
    name = "test_sleep"
    label = "Sleep"
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        start = time.monotonic()
        seconds = float(ctx.config.get("seconds", 0.1))
        if ctx.cancel_event.wait(seconds):
            raise NodeCancelled("cancelled")
        SPANS.append((ctx.node_id, ctx.run_id, start, time.monotonic()))
        return {"slept": seconds, "node": ctx.node_id}


class FlakyNode(NodeType):
    name = "test_flaky"
    label = "Flaky"
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        if ctx.config.get("fail_while") and os.path.exists(ctx.config["fail_while"]):
            raise NodeError("the flag file says fail", retryable=False)
        if ctx.attempt <= int(ctx.config.get("fail_times", 0)):
            raise NodeError(f"failure #{ctx.attempt}", retryable=bool(ctx.config.get("retryable", True)))
        return {"attempt": ctx.attempt}


class GateNode(NodeType):
    name = "test_gate"
    label = "Gate"
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        gate = GATES.setdefault(ctx.config["gate"], threading.Event())
        while not gate.wait(0.05):
            ctx.check_cancelled()
        return {"gate": ctx.config["gate"]}


class EffectNode(NodeType):
    """A side effect: appends ``run node attempt key`` to a file, then sleeps."""

    name = "test_effect"
    label = "Effect"
    side_effects = True
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        path = ctx.config["path"]
        with open(path, "a") as handle:
            handle.write(f"{ctx.run_id} {ctx.node_id} {ctx.attempt} {ctx.idempotency_key}\n")
            handle.flush()
            os.fsync(handle.fileno())
        if ctx.cancel_event.wait(float(ctx.config.get("seconds", 0.0))):
            raise NodeCancelled("cancelled")
        return {"node": ctx.node_id, "attempt": ctx.attempt}


class BigNode(NodeType):
    name = "test_big"
    label = "Big output"
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        ctx.log("making a big output")
        return {"data": "x" * int(ctx.config.get("size", 1000))}


class NotJsonNode(NodeType):
    name = "test_not_json"
    label = "Not JSON"
    config_schema = {"type": "object"}

    def execute(self, ctx: NodeContext) -> Any:
        return {"when": object()}


TEST_NODE_TYPES = [SleepNode, FlakyNode, GateNode, EffectNode, BigNode, NotJsonNode]


def register_test_nodes() -> list[str]:
    from workflows import nodes

    nodes.autodiscover()
    for cls in TEST_NODE_TYPES:
        nodes._registry[cls.name] = cls()
    return [cls.name for cls in TEST_NODE_TYPES]


def unregister_test_nodes() -> None:
    from workflows import nodes

    for cls in TEST_NODE_TYPES:
        nodes._registry.pop(cls.name, None)
