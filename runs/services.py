"""Run services: the one way anything starts, cancels, reruns, resumes or deletes a run.

CONTRACT (issue 3 implements; views, API, triggers and nodes call exactly these signatures).
"""

from __future__ import annotations

from typing import Any

from accounts.models import User
from workflows.models import Workflow

from .models import Artifact, NodeRun, Run


def run_start(
    *,
    workflow: Workflow,
    user: User | None,
    inputs: dict[str, Any] | None = None,
    trigger: str = "manual",
    mode: str = "async",
    parent: Run | None = None,
    parent_node_id: str = "",
    idempotency_key: str = "",
    request_hash: str = "",
    callback_url: str = "",
    token_budget: int | None = None,
) -> Run:
    """Validate inputs, pin the current version (publishing the draft if it changed), create the
    queued Run and its ``run.queued`` event, and enqueue ``runs.tasks.execute_run`` on commit.
    ``mode="sync"`` executes inline and returns the finished run. Raises ``ValidationError`` for bad
    inputs or an invalid graph, ``PermissionDenied`` when ``user`` may not run in the workspace."""
    raise NotImplementedError


def run_execute(*, run: Run) -> Run:
    """Execute a queued run now (in this process)."""
    raise NotImplementedError


def run_cancel(*, run: Run, user: User | None = None) -> Run:
    raise NotImplementedError


def run_rerun(*, run: Run, from_node: str | None = None, user: User | None = None) -> Run:
    raise NotImplementedError


def run_resume(
    *, run: Run, node_id: str, decision: str, data: dict[str, Any] | None = None, user: User | None = None
) -> Run:
    raise NotImplementedError


def run_delete(*, run: Run, user: User | None = None) -> None:
    raise NotImplementedError


def artifact_save(
    *,
    run: Run,
    name: str,
    content: bytes | str | dict | list,
    content_type: str | None = None,
    node_run: NodeRun | None = None,
) -> Artifact:
    raise NotImplementedError
