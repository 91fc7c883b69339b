"""Workflow services. CONTRACT (issue 2 implements; API, pages, admin and the engine call these)."""

from __future__ import annotations

from typing import Any

from accounts.models import User, Workspace

from .models import Workflow, WorkflowVersion


def workflow_definition(*, workflow: Workflow) -> dict[str, Any]:
    """The draft (Node/Edge rows + workflow fields) as a graphwright/v1 document."""
    raise NotImplementedError


def workflow_create(
    *, workspace: Workspace, user: User | None, name: str, definition: dict[str, Any] | None = None, **fields: Any
) -> Workflow:
    raise NotImplementedError


def workflow_update(
    *, workflow: Workflow, user: User | None, definition: dict[str, Any] | None = None, **fields: Any
) -> Workflow:
    raise NotImplementedError


def workflow_publish(*, workflow: Workflow, user: User | None, note: str = "") -> WorkflowVersion:
    """Validate the draft, then snapshot it as a new immutable version. ValidationError if invalid."""
    raise NotImplementedError


def workflow_import(*, workspace: Workspace, user: User | None, document: dict[str, Any]) -> Workflow:
    raise NotImplementedError


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    raise NotImplementedError


def workflow_archive(*, workflow: Workflow, user: User | None) -> Workflow:
    raise NotImplementedError


def workflow_restore(*, workflow: Workflow, user: User | None) -> Workflow:
    raise NotImplementedError
