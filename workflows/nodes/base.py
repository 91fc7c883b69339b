"""The node-type contract shared by the graph validator, the engine, the editor and the API.

A node type declares what it is (name, label, config schema, branches) and how it executes.
The engine, not the node, applies retry, timeout, on_error, cancellation and idempotency keys,
so every node type gets the same policy. ``execute`` receives a :class:`NodeContext` and returns
the node's JSON output, or a :class:`NodeResult` when it also picks a branch or must wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import jsonschema

from workflows import templating


class NodeError(Exception):
    """A node failed with a message fit for the user. ``retryable=False`` skips the retry policy."""

    def __init__(self, message: str, *, retryable: bool = True, data: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.data = data or {}


class NodeCancelled(Exception):
    """Raised inside a node when the run was cancelled or the attempt timed out."""


@dataclass
class NodeResult:
    """What a node returns when a plain output is not enough.

    ``branch``: the branch taken (condition ``true``/``false``, a switch case); edges labelled with
    another branch are not followed. ``wait``: the node pauses the run (approval) until resumed.
    """

    output: Any = None
    branch: str | None = None
    wait: bool = False


@dataclass(frozen=True)
class ConfigError:
    path: str  # "config.url" style path to the bad field ("" for the whole config)
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass
class NodeContext:
    """Everything a node may use while it executes. Built by the engine, one per attempt.

    ``config`` is the node's raw config from the pinned definition; call :meth:`render` on the parts
    that are templates. ``context`` is the template context: ``inputs``, ``nodes.<id>.output``,
    ``vars``, ``run`` (and ``item``/``index`` inside a loop body).
    """

    node_id: str
    node_type: str
    config: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None
    workspace_id: int | None = None
    user_id: int | None = None
    attempt: int = 1
    idempotency_key: str = ""
    deadline: float | None = None  # time.monotonic() value when this attempt times out
    cancel_event: threading.Event = field(default_factory=threading.Event)
    emit_callback: Callable[[str, dict[str, Any]], None] | None = None
    artifact_callback: Callable[..., dict[str, Any]] | None = None
    engine: Any = None  # the engine running this node (sub-runs, approvals); None in isolation
    logs: list[dict[str, Any]] = field(default_factory=list)

    # -- templates -------------------------------------------------------------------------
    def render(self, value: Any) -> Any:
        """Render templates in ``value`` (str, dict or list) against the run context."""
        try:
            return templating.render_value(value, self.context)
        except templating.TemplateRenderError as exc:
            raise NodeError(str(exc), retryable=False) from exc

    def render_text(self, source: str) -> str:
        try:
            return templating.render_text(source, self.context)
        except templating.TemplateRenderError as exc:
            raise NodeError(str(exc), retryable=False) from exc

    def evaluate(self, expression: str, extra: dict[str, Any] | None = None) -> Any:
        try:
            return templating.evaluate(expression, {**self.context, **(extra or {})})
        except templating.TemplateRenderError as exc:
            raise NodeError(str(exc), retryable=False) from exc

    # -- events, logs, artifacts -----------------------------------------------------------------
    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Record a RunEvent for this node (e.g. ``llm.token``); data must be small JSON."""
        if self.emit_callback is not None:
            self.emit_callback(event_type, {"node_id": self.node_id, **data})

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        entry = {"level": level, "message": message, "at": time.time(), **data}
        self.logs.append(entry)
        self.emit("node.log", {"level": level, "message": message, **data})

    def save_artifact(
        self, name: str, content: bytes | str | dict | list, content_type: str | None = None
    ) -> dict[str, Any]:
        """Store an artifact for this node and return a reference ``{"artifact_id", "name", ...}``."""
        if self.artifact_callback is None:
            raise NodeError("Artifacts are not available outside a run.", retryable=False)
        return self.artifact_callback(name=name, content=content, content_type=content_type)

    # -- cancellation and time ---------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise NodeCancelled("cancelled")

    def time_left(self, default: float | None = None) -> float | None:
        """Seconds left before this attempt times out (``default`` when there is no timeout)."""
        if self.deadline is None:
            return default
        return max(0.0, self.deadline - time.monotonic())


class NodeType:
    """Base class of every node type. Subclasses register with :func:`workflows.nodes.register`."""

    name: ClassVar[str]
    label: ClassVar[str]
    description: ClassVar[str] = ""
    category: ClassVar[str] = "control"  # control | io | ai
    icon: ClassVar[str] = "◆"
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    branches: ClassVar[tuple[str, ...]] = ()
    side_effects: ClassVar[bool] = False  # uses the idempotency key; never re-run once succeeded

    def branches_for(self, config: dict[str, Any]) -> tuple[str, ...]:
        """Branch labels this node offers for ``config`` (a switch offers its case names)."""
        return self.branches

    def validate_config(self, config: Any) -> list[ConfigError]:
        """Check ``config`` against the schema, then :meth:`clean_config`. Returns every error."""
        validator = jsonschema.Draft202012Validator(self.config_schema)
        errors = [
            ConfigError(".".join(["config", *map(str, error.absolute_path)]), error.message)
            for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
        ]
        if not errors and isinstance(config, dict):
            errors.extend(self.clean_config(config))
        return errors

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        """Checks the schema cannot express (template syntax, cross-field rules)."""
        return []

    def execute(self, ctx: NodeContext) -> Any:
        raise NotImplementedError(f"Node type {self.name!r} cannot execute yet.")

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "label": cls.label,
            "description": cls.description,
            "category": cls.category,
            "icon": cls.icon,
            "config_schema": cls.config_schema,
            "branches": list(cls.branches),
        }
