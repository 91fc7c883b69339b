"""Run services: the one way anything starts, cancels, reruns, resumes or deletes a run.

Views, the API, triggers, nodes (sub-workflows, agents) and tasks all call these functions.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.choices import Action
from accounts.models import User
from accounts.permissions import require
from workflows.models import Workflow, WorkflowVersion

from . import engine, events
from .choices import RUN_FINAL, IllegalTransition, NodeRunStatus, RunStatus, TriggerType
from .models import Artifact, NodeRun, Run

INPUT_TYPES = {"string", "number", "integer", "boolean", "object", "array", "file"}
APPROVE = {"approve", "approved", "yes", "accept"}
REJECT = {"reject", "rejected", "no", "deny"}


# -- inputs ---------------------------------------------------------------------------------------
def _type_ok(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "file":  # an artifact reference, an id, or a URL/path string
        return isinstance(value, str | dict) or (isinstance(value, int) and not isinstance(value, bool))
    return True


def validate_inputs(declared: dict[str, Any] | None, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``inputs`` against the workflow's declarations; fill defaults. Raises a field-level
    ``ValidationError``. A workflow that declares nothing accepts any JSON object."""
    if inputs is None:
        inputs = {}
    if not isinstance(inputs, dict):
        raise ValidationError({"inputs": "Inputs must be a JSON object."})
    try:
        json.dumps(inputs)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"inputs": f"Inputs must be JSON: {exc}"}) from exc
    declared = declared or {}
    if not declared:
        return dict(inputs)
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec if isinstance(spec, dict) else {"type": str(spec)}
        kind = spec.get("type", "string")
        if name in inputs and inputs[name] is not None:
            value = inputs[name]
            if kind not in INPUT_TYPES:
                errors.setdefault(name, []).append(f"Unknown declared type {kind!r}.")
            elif not _type_ok(kind, value):
                errors.setdefault(name, []).append(f"Expected {kind}, got {type(value).__name__}.")
            elif "enum" in spec and value not in spec["enum"]:
                errors.setdefault(name, []).append(f"Must be one of {spec['enum']}.")
            cleaned[name] = value
        elif "default" in spec:
            cleaned[name] = spec["default"]
        elif spec.get("required", False):
            errors.setdefault(name, []).append("This input is required.")
    for name in inputs:
        if name not in declared:
            errors.setdefault(name, []).append("Unknown input: the workflow does not declare it.")
    if errors:
        raise ValidationError({f"inputs.{name}": messages for name, messages in errors.items()})
    return cleaned


def _pin_version(workflow: Workflow, user: User | None) -> WorkflowVersion:
    """The version a new run pins: the workflow service validates and publishes a changed draft.
    The caller has checked that ``user`` may run in the workspace."""
    from workflows.services import workflow_version_to_run

    version = workflow_version_to_run(workflow=workflow, user=user)
    if version is None:
        raise ValidationError({"workflow": "The workflow has no published version to run."})
    return version


# -- start and execute ----------------------------------------------------------------------------
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
    version: WorkflowVersion | None = None,
) -> Run:
    """Validate inputs, pin the current version (publishing the draft if it changed), create the
    queued Run and its ``run.queued`` event, and enqueue ``runs.tasks.execute_run`` on commit.
    ``mode="sync"`` executes inline and returns the finished run. Raises ``ValidationError`` for bad
    inputs or an invalid graph, ``PermissionDenied`` when ``user`` may not run in the workspace."""
    if mode not in ("async", "sync"):
        raise ValidationError({"mode": "Use async or sync."})
    if trigger not in TriggerType.values:
        raise ValidationError({"trigger": f"Unknown trigger {trigger!r}."})
    require(user, workflow.workspace_id, Action.RUN)
    if workflow.is_archived:
        raise ValidationError({"workflow": "An archived workflow cannot run."})
    cleaned = validate_inputs(workflow.inputs, inputs)
    if version is None:
        version = _pin_version(workflow, user)
    elif version.workflow_id != workflow.pk:
        raise ValidationError({"version": "The version belongs to another workflow."})
    with transaction.atomic():
        run = Run.objects.create(
            workspace_id=workflow.workspace_id,
            workflow=workflow,
            version=version,
            trigger=trigger,
            inputs=cleaned,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            parent=parent,
            parent_node_id=parent_node_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            callback_url=callback_url,
            token_budget=token_budget,
            event_seq=1,  # run.queued below: a row created in this transaction needs no counter update
        )
        queued = {"status": RunStatus.QUEUED, "trigger": trigger, "version": version.number}
        events.emit_first(run, "run.queued", queued)
        if parent is None:
            audit(action="run.started", actor=user, workspace=workflow.workspace_id, target=run)
        if mode == "async":
            engine.enqueue(run.pk)
    if mode == "sync":
        return run_execute(run=run, force=True)
    return run


def run_start_many(
    *,
    workflow: Workflow,
    user: User | None,
    inputs: list[dict[str, Any]],
    trigger: str = "api",
    idempotency_key: str = "",
    request_hash: str = "",
    callback_url: str = "",
) -> list[Run]:
    """Start one run per item of ``inputs`` (a batch: a list of records to put through the same
    workflow), all pinned to the same version, in one transaction. Every item is validated first;
    one bad item raises a ``ValidationError`` keyed ``inputs[<index>].<name>`` and starts nothing.
    With ``idempotency_key``, run *i* gets the key ``<key>:<i>``; ``callback_url`` is POSTed each
    run as it ends. The runs are enqueued in chunks
    (``runs.tasks.execute_runs``) that workers execute with shared writes when the workflow is
    made only of inline nodes, so such a batch costs a fraction of as many ``run_start`` calls; any
    other run gets a task of its own. Returns the queued runs in order."""
    from django.conf import settings

    if trigger not in TriggerType.values:
        raise ValidationError({"trigger": f"Unknown trigger {trigger!r}."})
    if not isinstance(inputs, list) or not inputs:
        raise ValidationError({"inputs": "Give a non-empty list of input objects."})
    if len(inputs) > settings.GW_BATCH_MAX_RUNS:
        raise ValidationError({"inputs": f"At most {settings.GW_BATCH_MAX_RUNS} runs per batch."})
    require(user, workflow.workspace_id, Action.RUN)
    if workflow.is_archived:
        raise ValidationError({"workflow": "An archived workflow cannot run."})
    cleaned: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    for index, item in enumerate(inputs):
        try:
            cleaned.append(validate_inputs(workflow.inputs, item))
        except ValidationError as exc:
            for name, messages in exc.message_dict.items():
                errors[f"inputs[{index}]" + name.removeprefix("inputs")] = messages
    if errors:
        raise ValidationError(errors)
    version = _pin_version(workflow, user)
    creator = user if getattr(user, "is_authenticated", False) else None
    with transaction.atomic():
        runs = Run.objects.bulk_create(
            [
                Run(
                    workspace_id=workflow.workspace_id,
                    workflow=workflow,
                    version=version,
                    trigger=trigger,
                    inputs=item,
                    created_by=creator,
                    idempotency_key=f"{idempotency_key}:{index}" if idempotency_key else "",
                    request_hash=request_hash,
                    callback_url=callback_url,
                    event_seq=1,
                )
                for index, item in enumerate(cleaned)
            ]
        )
        if not all(run.pk for run in runs):  # a backend that cannot return ids from a bulk insert
            raise RuntimeError("run_start_many needs a database that returns ids from a bulk insert.")
        events.emit_first_many(
            runs, "run.queued", {"status": RunStatus.QUEUED, "trigger": trigger, "version": version.number}
        )
        from accounts.audit import audit_entry
        from accounts.models import AuditLog

        AuditLog.objects.bulk_create(
            [audit_entry(action="run.started", actor=user, workspace=workflow.workspace_id, target=run) for run in runs]
        )
        # Chunks pay off where per-run overhead is the cost: runs made only of inline nodes. A run
        # with real work in it (an LLM, an HTTP call) keeps a task, and a worker process, of its own.
        chunk = settings.GW_RUN_CHUNK if engine.inline_only(version.definition) else 1
        engine.enqueue_many([run.pk for run in runs], chunk=chunk)
    return runs


def run_execute(*, run: Run, force: bool = False) -> Run:
    """Execute a queued (or resumed) run now, in this thread. ``force`` ignores the workflow's
    concurrency limit. Returns the run as it stands afterwards (still queued when over the limit)."""
    engine.execute_run(run.pk, bypass_limit=force)
    run.refresh_from_db()
    return run


# -- cancel ---------------------------------------------------------------------------------------
def run_cancel(*, run: Run, user: User | None = None) -> Run:
    """Cancel a queued, running or waiting run (a finished run is returned unchanged). A queued run
    never starts; the worker executing a running one notices within 0.2 s and abandons its nodes."""
    require(user, run.workspace_id, Action.RUN)
    with transaction.atomic():
        try:
            engine.finish_run(run, RunStatus.CANCELLED, error="Cancelled" + (f" by {user}" if user else "") + ".")
        except IllegalTransition:
            run.refresh_from_db()
            return run
        for node_run in NodeRun.objects.filter(run=run, status=NodeRunStatus.WAITING):
            events.transition_node(node_run, NodeRunStatus.CANCELLED)
        engine.cancel_active_children(run.pk)
        if run.parent_id is None:
            audit(action="run.cancelled", actor=user, workspace=run.workspace_id, target=run)
    return run


# -- rerun ----------------------------------------------------------------------------------------
def _descendants(definition: dict[str, Any], node_id: str) -> set[str]:
    children: dict[str, list[str]] = {}
    for edge in definition.get("edges", []):
        children.setdefault(edge["source"], []).append(edge["target"])
    seen, stack = {node_id}, [node_id]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def run_rerun(*, run: Run, from_node: str | None = None, user: User | None = None, mode: str = "async") -> Run:
    """Start a new run of the same version and inputs that reuses every finished node outside
    ``from_node``'s downstream (default: the node that failed) and executes from there."""
    require(user, run.workspace_id, Action.RUN)
    definition = run.version.definition or {}
    node_ids = {node["id"] for node in definition.get("nodes", [])}
    if from_node is None:
        failed = run.node_runs.filter(status=NodeRunStatus.FAILED).order_by("finished_at", "id").first()
        if failed is None:
            raise ValidationError({"from_node": "The run has no failed node; name the node to rerun from."})
        from_node = failed.node_id
    if from_node not in node_ids:
        raise ValidationError({"from_node": f"The workflow has no node {from_node!r}."})
    rerun_set = _descendants(definition, from_node)
    nodes = {node["id"]: node for node in definition.get("nodes", [])}
    reusable = [
        node_run
        for node_run in run.node_runs.all()
        if node_run.node_id not in rerun_set
        and (
            node_run.status in (NodeRunStatus.SUCCEEDED, NodeRunStatus.SKIPPED)
            or (
                node_run.status == NodeRunStatus.FAILED
                and nodes.get(node_run.node_id, {}).get("on_error") in ("continue", "branch")
            )
        )
    ]
    with transaction.atomic():
        new = Run.objects.create(
            workspace_id=run.workspace_id,
            workflow_id=run.workflow_id,
            version_id=run.version_id,
            trigger=TriggerType.RERUN,
            inputs=run.inputs,
            created_by=user if getattr(user, "is_authenticated", False) else run.created_by,
            rerun_of=run,
            rerun_from=from_node,
            callback_url=run.callback_url,
            token_budget=run.token_budget,
        )
        events.emit(
            new.pk, "run.queued", {"status": RunStatus.QUEUED, "trigger": TriggerType.RERUN, "rerun_of": run.pk}
        )
        NodeRun.objects.bulk_create(
            [
                NodeRun(
                    run=new,
                    node_id=old.node_id,
                    node_type=old.node_type,
                    status=old.status,
                    attempt=old.attempt,
                    input=old.input,
                    output=old.output,
                    branch=old.branch,
                    error=old.error,
                    idempotency_key=old.idempotency_key,
                    reused_from=old,
                    started_at=old.started_at,
                    finished_at=old.finished_at,
                    duration_ms=old.duration_ms,
                )
                for old in reusable
            ]
        )
        for old in reusable:
            events.emit(new.pk, "node.reused", {"node_id": old.node_id, "status": old.status, "reused_from": old.pk})
        audit(action="run.rerun", actor=user, workspace=run.workspace_id, target=new, data={"from_node": from_node})
        if mode == "async":
            engine.enqueue(new.pk)
    if mode == "sync":
        return run_execute(run=new, force=True)
    return new


# -- approvals ------------------------------------------------------------------------------------
def run_resume(
    *,
    run: Run,
    node_id: str,
    decision: str,
    data: dict[str, Any] | None = None,
    user: User | None = None,
    mode: str = "async",
) -> Run:
    """Decide a waiting approval: ``decision`` approve/reject sends the run down the ``approved`` or
    ``rejected`` branch. The run is then executed again (enqueued, or inline with ``mode="sync"``)."""
    require(user, run.workspace_id, Action.RUN)
    normalized = (decision or "").strip().lower()
    if normalized in APPROVE:
        branch = "approved"
    elif normalized in REJECT:
        branch = "rejected"
    else:
        raise ValidationError({"decision": "Use approve or reject."})
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        node_run = NodeRun.objects.filter(run=locked, node_id=node_id).first()
        if node_run is None:
            raise ValidationError({"node_id": f"The run has no node {node_id!r}."})
        if node_run.status != NodeRunStatus.WAITING or locked.status in RUN_FINAL:
            raise ValidationError({"node_id": f"Node {node_id!r} is not waiting for a decision."})
        approvers = (node_run.output or {}).get("approvers") if isinstance(node_run.output, dict) else None
        if approvers and user is not None and user.username not in approvers:
            raise PermissionDenied("You are not one of this approval's approvers.")
        output = {
            "decision": branch,
            "data": data or {},
            "decided_by": getattr(user, "username", None),
            "decided_at": timezone.now().isoformat(),
        }
        events.transition_node(node_run, NodeRunStatus.SUCCEEDED, output=output, branch=branch)
        audit(
            action="run.resumed",
            actor=user,
            workspace=run.workspace_id,
            target=locked,
            data={"node": node_id, "decision": branch},
        )
        waiting = locked.status == RunStatus.WAITING
        if waiting and mode == "async":
            engine.enqueue(locked.pk)
    if waiting and mode == "sync":
        return run_execute(run=run, force=True)
    run.refresh_from_db()
    return run


def approval_expire(*, node_run: NodeRun, now: datetime | None = None) -> bool:
    """Resolve a waiting approval whose timeout passed down its ``timeout`` branch. Returns True
    when it did (the caller enqueues the run if it is parked)."""
    expires = (node_run.output or {}).get("expires_at") if isinstance(node_run.output, dict) else None
    if not expires or node_run.status != NodeRunStatus.WAITING:
        return False
    now = now or timezone.now()
    if datetime.fromisoformat(expires) > now:
        return False
    try:
        events.transition_node(
            node_run,
            NodeRunStatus.SUCCEEDED,
            output={**node_run.output, "decision": "timeout"},
            branch="timeout",
        )
    except IllegalTransition:
        node_run.refresh_from_db()
        return False
    return True


# -- delete ---------------------------------------------------------------------------------------
def _all_artifacts(run: Run) -> list[Artifact]:
    artifacts = list(run.artifacts.all())
    for child in run.children.all():
        artifacts.extend(_all_artifacts(child))
    return artifacts


def run_delete(*, run: Run, user: User | None = None) -> None:
    """Delete a finished run with its node runs, events, child runs and artifact files."""
    require(user, run.workspace_id, Action.RUN)
    if not run.is_finished:
        raise ValidationError({"status": "Only a finished run can be deleted; cancel it first."})
    files = [artifact.file.name for artifact in _all_artifacts(run) if artifact.file]
    storage = Artifact._meta.get_field("file").storage
    with transaction.atomic():
        audit(
            action="run.deleted",
            actor=user,
            workspace=run.workspace_id,
            data={"run": run.pk, "workflow": run.workflow_id},
        )
        run.delete()
        transaction.on_commit(lambda: [storage.delete(name) for name in files if storage.exists(name)])


# -- artifacts ------------------------------------------------------------------------------------
def artifact_save(
    *,
    run: Run,
    name: str,
    content: bytes | str | dict | list,
    content_type: str | None = None,
    node_run: NodeRun | None = None,
) -> Artifact:
    """Store bytes, text or JSON as a file of ``run`` (and optionally of one node)."""
    artifact = artifact_prepare(run=run, name=name, content=content, content_type=content_type, node_run=node_run)
    artifact.save()
    return artifact


def artifact_prepare(
    *,
    run: Run,
    name: str,
    content: bytes | str | dict | list,
    content_type: str | None = None,
    node_run: NodeRun | None = None,
) -> Artifact:
    """Write the file of an artifact and return its row unsaved (the caller inserts it, alone or
    with others). Raises ``ValidationError`` for a bad name or content."""
    if not name or "/" in name or "\\" in name or name in {".", ".."}:
        raise ValidationError({"name": "Give the artifact a plain file name."})
    if isinstance(content, bytes):
        data = content
        content_type = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    elif isinstance(content, str):
        data = content.encode()
        content_type = content_type or mimetypes.guess_type(name)[0] or "text/plain"
    elif isinstance(content, dict | list):
        data = json.dumps(content, indent=2, default=str).encode()
        content_type = content_type or "application/json"
    else:
        raise ValidationError({"content": "Artifacts hold bytes, text or JSON."})
    artifact = Artifact(
        run=run,
        node_run=node_run,
        name=name,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    artifact.file.save(name, ContentFile(data), save=False)
    return artifact


def approval_deadline(seconds: float | None) -> str | None:
    if not seconds:
        return None
    return (timezone.now() + timedelta(seconds=float(seconds))).isoformat()
