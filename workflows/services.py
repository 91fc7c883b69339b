"""Workflow services: the one way workflows, their drafts and their versions change.

API, pages, admin and the engine call these. The draft lives in Node/Edge rows; a
:class:`WorkflowVersion` is an immutable graphwright/v1 snapshot that runs pin.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists
from django.utils import timezone
from django.utils.text import slugify

from accounts.audit import audit
from accounts.choices import Action
from accounts.models import User, Workspace
from accounts.permissions import require

from .choices import DEFINITION_FORMAT, OnError
from .graph import DRAFT_CODES, GraphError, validate_definition
from .models import Edge, Node, Workflow, WorkflowVersion

AUTO_PUBLISH_NOTE = "Published automatically for a run"

# Workflow model fields a caller may set directly (``vars`` and ``settings`` map onto model fields).
_WORKFLOW_FIELDS = {"name", "slug", "description", "tags", "is_active", "inputs", "variables", "timeout",
                    "max_concurrent_runs"}  # fmt: skip
_NODE_KEYS = ("id", "type", "name", "config", "position", "retry", "timeout", "on_error")


# -- definition <-> rows ------------------------------------------------------------------------


def _node_dict(node: Node) -> dict[str, Any]:
    return {
        "id": node.node_id,
        "type": node.type,
        "name": node.name,
        "config": node.config if node.config is not None else {},
        "position": node.position or {},
        "retry": node.retry or {},
        "timeout": node.timeout,
        "on_error": node.on_error,
    }


def _edge_dict(edge: Edge) -> dict[str, Any]:
    return {"source": edge.source.node_id, "target": edge.target.node_id, "branch": edge.branch or None}


def workflow_definition(*, workflow: Workflow) -> dict[str, Any]:
    """The draft (Node/Edge rows + workflow fields) as a graphwright/v1 document."""
    nodes = list(workflow.nodes.order_by("id"))
    edges = list(workflow.edges.select_related("source", "target").order_by("id"))
    return {
        "format": DEFINITION_FORMAT,
        "name": workflow.name,
        "description": workflow.description,
        "tags": list(workflow.tags or []),
        "inputs": copy.deepcopy(workflow.inputs or {}),
        "vars": copy.deepcopy(workflow.variables or {}),
        "settings": {"timeout": workflow.timeout, "max_concurrent_runs": workflow.max_concurrent_runs},
        "nodes": [_node_dict(node) for node in nodes],
        "edges": [_edge_dict(edge) for edge in edges],
    }


def normalize_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """Fill the optional keys of a (valid) document with their defaults, as :func:`workflow_definition` writes them."""
    settings = definition.get("settings") or {}
    return {
        "format": DEFINITION_FORMAT,
        "name": definition.get("name", ""),
        "description": definition.get("description") or "",
        "tags": list(definition.get("tags") or []),
        "inputs": copy.deepcopy(definition.get("inputs") or {}),
        "vars": copy.deepcopy(definition.get("vars") or {}),
        "settings": {"timeout": settings.get("timeout"), "max_concurrent_runs": settings.get("max_concurrent_runs")},
        "nodes": [
            {
                "id": node["id"],
                "type": node["type"],
                "name": node.get("name") or "",
                "config": copy.deepcopy(node.get("config") if node.get("config") is not None else {}),
                "position": copy.deepcopy(node.get("position") or {}),
                "retry": copy.deepcopy(node.get("retry") or {}),
                "timeout": node.get("timeout"),
                "on_error": node.get("on_error") or OnError.FAIL,
            }
            for node in definition.get("nodes") or []
        ],
        "edges": [
            {"source": edge["source"], "target": edge["target"], "branch": edge.get("branch") or None}
            for edge in definition.get("edges") or []
        ],
    }


def _error_key(error: GraphError) -> str:
    if error.node and error.field and not error.field.startswith(("nodes[", "edges[")):
        return f"nodes.{error.node}.{error.field}"
    if error.node and error.edge is None and error.code not in {"cycle", "unreachable", "disconnected"}:
        return f"nodes.{error.node}"
    if error.edge is not None:
        return "edges"
    if error.field:
        return error.field.split("[")[0] if error.field.startswith(("nodes[", "edges[")) else error.field
    return "definition"


def graph_validation_error(errors: list[GraphError]) -> ValidationError:
    """One ValidationError keyed by field (``nodes.<id>.config.url``, ``edges``, ``name``, ``definition``)."""
    by_field: dict[str, list[str]] = {}
    for error in errors:
        by_field.setdefault(_error_key(error), []).append(error.message)
    return ValidationError(by_field)


def _raise_draft_errors(definition: dict[str, Any]) -> None:
    errors = [error for error in validate_definition(definition) if error.code in DRAFT_CODES]
    if errors:
        raise graph_validation_error(errors)


def _apply_metadata(workflow: Workflow, definition: dict[str, Any]) -> None:
    if definition.get("name"):
        workflow.name = definition["name"].strip()
    if "description" in definition:
        workflow.description = definition.get("description") or ""
    if "tags" in definition:
        workflow.tags = list(definition.get("tags") or [])
    if "inputs" in definition:
        workflow.inputs = copy.deepcopy(definition.get("inputs") or {})
    if "vars" in definition:
        workflow.variables = copy.deepcopy(definition.get("vars") or {})
    if "settings" in definition:
        settings = definition.get("settings") or {}
        workflow.timeout = settings.get("timeout")
        workflow.max_concurrent_runs = settings.get("max_concurrent_runs")


def _create_node_row(workflow: Workflow, node: dict[str, Any]) -> Node:
    """One Node row from a normalised definition node."""
    return Node.objects.create(
        workflow=workflow,
        node_id=node["id"],
        type=node["type"],
        name=node["name"],
        config=node["config"],
        position=node["position"],
        retry=node["retry"],
        timeout=node["timeout"],
        on_error=node["on_error"],
    )


def _replace_graph(workflow: Workflow, definition: dict[str, Any]) -> None:
    """Replace the draft's Node and Edge rows by those of ``definition`` (already validated)."""
    workflow.nodes.all().delete()  # cascades to the edges
    rows: dict[str, Node] = {}
    for node in normalize_definition(definition)["nodes"]:
        rows[node["id"]] = _create_node_row(workflow, node)
    Edge.objects.bulk_create(
        [
            Edge(
                workflow=workflow, source=rows[edge["source"]], target=rows[edge["target"]], branch=edge["branch"] or ""
            )
            for edge in normalize_definition(definition)["edges"]
        ]
    )


def _unique_slug(workspace: Workspace, base: str, exclude_pk: int | None = None) -> str:
    base = (slugify(base) or "workflow")[:200]
    taken = set(
        Workflow.objects.filter(workspace=workspace, slug__startswith=base)
        .exclude(pk=exclude_pk)
        .values_list("slug", flat=True)
    )
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


def _set_fields(workflow: Workflow, fields: dict[str, Any]) -> None:
    """Apply caller-given model fields (``vars``/``settings`` accepted as in the definition format)."""
    fields = dict(fields)
    if "vars" in fields:
        fields["variables"] = fields.pop("vars")
    if "settings" in fields:
        settings = fields.pop("settings") or {}
        fields.setdefault("timeout", settings.get("timeout"))
        fields.setdefault("max_concurrent_runs", settings.get("max_concurrent_runs"))
    unknown = set(fields) - _WORKFLOW_FIELDS
    if unknown:
        raise ValidationError({key: ["Unknown workflow field."] for key in sorted(unknown)})
    for key, value in fields.items():
        setattr(workflow, key, value)


def _check_workflow_fields(workflow: Workflow) -> None:
    """Field checks the graph validator does not see (the model row itself)."""
    errors: dict[str, list[str]] = {}
    if not isinstance(workflow.name, str) or not workflow.name.strip():
        errors["name"] = ["A workflow needs a name."]
    elif len(workflow.name) > 200:
        errors["name"] = ["The name is longer than 200 characters."]
    if workflow.slug and slugify(workflow.slug) != workflow.slug:
        errors["slug"] = ["Use only lowercase letters, digits and hyphens."]
    elif (
        workflow.slug
        and Workflow.objects.filter(workspace_id=workflow.workspace_id, slug=workflow.slug)
        .exclude(pk=workflow.pk)
        .exists()
    ):
        errors["slug"] = [f"The slug {workflow.slug!r} is already used in this workspace."]
    # Reuse the definition checks for tags, inputs, vars and settings.
    probe = {
        "tags": workflow.tags,
        "inputs": workflow.inputs,
        "vars": workflow.variables,
        "settings": {"timeout": workflow.timeout, "max_concurrent_runs": workflow.max_concurrent_runs},
    }
    for error in validate_definition(probe):
        if error.code == "malformed" and error.field and error.field.split(".")[0] in probe:
            errors.setdefault(error.field, []).append(error.message)
    if errors:
        raise ValidationError(errors)


def _touch(workflow: Workflow) -> None:
    workflow.updated_at = timezone.now()
    Workflow.objects.filter(pk=workflow.pk).update(updated_at=workflow.updated_at)


def _refuse_archived(workflow: Workflow) -> None:
    if workflow.archived_at is not None:
        raise ValidationError("This workflow is archived: restore it before changing it.")


# -- workflows ----------------------------------------------------------------------------------


@transaction.atomic
def workflow_create(
    *, workspace: Workspace, user: User | None, name: str, definition: dict[str, Any] | None = None, **fields: Any
) -> Workflow:
    """Create a workflow, optionally with a whole draft graph. ValidationError with field messages."""
    require(user, workspace, Action.EDIT)
    workflow = Workflow(workspace=workspace, created_by=user if getattr(user, "is_authenticated", False) else None)
    if definition is not None:
        if not isinstance(definition, dict):
            raise ValidationError({"definition": ["A workflow definition must be a JSON object."]})
        _raise_draft_errors(definition)
        _apply_metadata(workflow, definition)
    if name:
        workflow.name = name.strip() if isinstance(name, str) else name
    _set_fields(workflow, fields)
    if not workflow.slug:
        workflow.slug = _unique_slug(workspace, workflow.name if isinstance(workflow.name, str) else "")
    _check_workflow_fields(workflow)
    workflow.save()
    if definition is not None:
        _replace_graph(workflow, definition)
    audit(action="workflow.created", actor=user, workspace=workspace, target=workflow)
    return workflow


@transaction.atomic
def workflow_update(
    *, workflow: Workflow, user: User | None, definition: dict[str, Any] | None = None, **fields: Any
) -> Workflow:
    """Change workflow fields and/or replace the whole draft graph atomically."""
    require(user, workflow.workspace_id, Action.EDIT)
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    _refuse_archived(workflow)
    if definition is not None:
        if not isinstance(definition, dict):
            raise ValidationError({"definition": ["A workflow definition must be a JSON object."]})
        _raise_draft_errors(definition)
        _apply_metadata(workflow, definition)
    _set_fields(workflow, fields)
    _check_workflow_fields(workflow)
    workflow.save()
    if definition is not None:
        _replace_graph(workflow, definition)
    changed = sorted(fields) + (["definition"] if definition is not None else [])
    audit(
        action="workflow.updated",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"changed": changed},
    )
    return workflow


def _publish(workflow: Workflow, user: User | None, note: str) -> WorkflowVersion:
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    definition = workflow_definition(workflow=workflow)
    errors = validate_definition(definition)
    if errors:
        raise graph_validation_error(errors)
    latest = workflow.latest_version()
    if latest is not None and latest.definition == definition:
        return latest
    version = WorkflowVersion.objects.create(
        workflow=workflow,
        number=(latest.number + 1) if latest else 1,
        definition=definition,
        author=user if getattr(user, "is_authenticated", False) else None,
        note=(note or "")[:500],
    )
    audit(
        action="workflow.published",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"version": version.number, "note": version.note},
    )
    return version


@transaction.atomic
def workflow_publish(*, workflow: Workflow, user: User | None, note: str = "") -> WorkflowVersion:
    """Validate the draft, then snapshot it as a new immutable version. ValidationError if invalid.

    Publishing a draft identical to the latest version returns that version instead of a duplicate.
    """
    require(user, workflow.workspace_id, Action.EDIT)
    return _publish(workflow, user, note)


def workflow_current_version(*, workflow: Workflow, user: User | None) -> WorkflowVersion:
    """The version a new run pins: the latest one if the draft is unchanged, else a new one.

    Needs only the right to run: starting a run of an edited draft publishes it (noted as such).
    A workflow without any draft nodes runs its latest version. ValidationError if the draft is invalid.
    """
    require(user, workflow.workspace_id, Action.RUN)
    return workflow_version_to_run(workflow=workflow, user=user)


def workflow_version_to_run(*, workflow: Workflow, user: User | None) -> WorkflowVersion:
    """:func:`workflow_current_version` for a caller that has already checked ``Action.RUN``
    (``run_start``: one permission query per run instead of two)."""
    # No draft rows at all (a workflow made only of versions, e.g. by a script): run the latest
    # version. One query asks for both.
    latest = (
        workflow.versions.annotate(has_draft=Exists(Node.objects.filter(workflow_id=workflow.pk)))
        .order_by("-number")
        .first()
    )
    if latest is not None and not latest.has_draft:
        return latest
    with transaction.atomic():  # _publish locks the workflow row
        return _publish(workflow, user, AUTO_PUBLISH_NOTE)


def workflow_is_dirty(*, workflow: Workflow) -> bool:
    """Whether the draft differs from the latest published version (or nothing is published yet)."""
    latest = workflow.latest_version()
    if latest is not None and not workflow.nodes.exists():
        return False
    return latest is None or latest.definition != workflow_definition(workflow=workflow)


def _parse_document(document: Any) -> dict[str, Any]:
    if isinstance(document, bytes | bytearray):
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError({"document": ["The file is not UTF-8 text."]}) from exc
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise ValidationError({"document": [f"Not valid JSON: {exc}"]}) from exc
    if not isinstance(document, dict):
        raise ValidationError({"document": ["A workflow definition must be a JSON object."]})
    return document


@transaction.atomic
def workflow_import(
    *,
    workspace: Workspace,
    user: User | None,
    document: dict[str, Any] | str | bytes,
    name: str | None = None,
    publish: bool = False,
) -> Workflow:
    """Create a workflow from a whole graphwright/v1 document (a dict or its JSON text).

    The whole document is validated first; a bad document saves nothing. The slug is made unique.
    """
    require(user, workspace, Action.EDIT)
    document = _parse_document(document)
    errors = validate_definition(document)
    if document.get("format") is None:
        errors.insert(
            0, GraphError("malformed", f'The document needs "format": "{DEFINITION_FORMAT}".', field="format")
        )
    if not name and not (isinstance(document.get("name"), str) and document["name"].strip()):
        errors.insert(0, GraphError("malformed", "The document needs a name.", field="name"))
    if errors:
        raise graph_validation_error(errors)
    workflow = Workflow(workspace=workspace, created_by=user if getattr(user, "is_authenticated", False) else None)
    _apply_metadata(workflow, document)
    if name:
        workflow.name = name.strip()
    workflow.slug = _unique_slug(workspace, workflow.name)
    _check_workflow_fields(workflow)
    workflow.save()
    _replace_graph(workflow, document)
    audit(
        action="workflow.imported",
        actor=user,
        workspace=workspace,
        target=workflow,
        data={"nodes": len(document.get("nodes") or []), "edges": len(document.get("edges") or [])},
    )
    if publish:
        _publish(workflow, user, "Imported")
    return workflow


def workflow_export(*, workflow: Workflow) -> dict[str, Any]:
    """The draft as a graphwright/v1 document; :func:`workflow_import` of it gives the same graph."""
    return workflow_definition(workflow=workflow)


@transaction.atomic
def workflow_archive(*, workflow: Workflow, user: User | None) -> Workflow:
    """What deleting a workflow does: hide it, keep it and its run history (restorable)."""
    require(user, workflow.workspace_id, Action.EDIT)
    if workflow.archived_at is None:
        workflow.archived_at = timezone.now()
        workflow.save(update_fields=["archived_at", "updated_at"])
        audit(action="workflow.archived", actor=user, workspace=workflow.workspace_id, target=workflow)
    return workflow


@transaction.atomic
def workflow_restore(*, workflow: Workflow, user: User | None) -> Workflow:
    require(user, workflow.workspace_id, Action.EDIT)
    if workflow.archived_at is not None:
        workflow.archived_at = None
        workflow.save(update_fields=["archived_at", "updated_at"])
        audit(action="workflow.restored", actor=user, workspace=workflow.workspace_id, target=workflow)
    return workflow


# -- single nodes and edges (the editor and the API change the draft one piece at a time) -------------


def _locked_draft(workflow: Workflow, user: User | None) -> tuple[Workflow, dict[str, Any]]:
    require(user, workflow.workspace_id, Action.EDIT)
    workflow = Workflow.objects.select_for_update().get(pk=workflow.pk)
    _refuse_archived(workflow)
    return workflow, workflow_definition(workflow=workflow)


def _check_change(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Refuse a change that adds draft errors (errors the draft already had are not blamed on it)."""
    old = {(e.code, e.message) for e in validate_definition(before) if e.code in DRAFT_CODES}
    new = [e for e in validate_definition(after) if e.code in DRAFT_CODES and (e.code, e.message) not in old]
    if new:
        raise graph_validation_error(new)


def _node_payload(node: dict[str, Any]) -> dict[str, Any]:
    unknown = set(node) - set(_NODE_KEYS)
    if unknown:
        raise ValidationError({key: ["Unknown node field."] for key in sorted(unknown)})
    return node


@transaction.atomic
def workflow_node_add(*, workflow: Workflow, user: User | None, node: dict[str, Any]) -> Node:
    """Add one node (``{"id", "type", "config", ...}`` as in the definition format) to the draft."""
    workflow, before = _locked_draft(workflow, user)
    if not isinstance(node, dict):
        raise ValidationError({"node": ["A node must be an object."]})
    after = copy.deepcopy(before)
    after["nodes"].append(_node_payload(node))
    _check_change(before, after)
    data = normalize_definition(after)["nodes"][-1]
    row = _create_node_row(workflow, data)
    _touch(workflow)
    audit(
        action="workflow.node_added",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"node": row.node_id, "type": row.type},
    )
    return row


def _find_node(workflow: Workflow, node_id: str) -> Node:
    row = workflow.nodes.filter(node_id=node_id).first()
    if row is None:
        raise ValidationError({"node_id": [f"The workflow has no node {node_id!r}."]})
    return row


@transaction.atomic
def workflow_node_update(*, workflow: Workflow, user: User | None, node_id: str, **changes: Any) -> Node:
    """Change fields of one node (``id`` renames it; its edges follow)."""
    workflow, before = _locked_draft(workflow, user)
    row = _find_node(workflow, node_id)
    _node_payload(changes)
    after = copy.deepcopy(before)
    for node in after["nodes"]:
        if node["id"] == node_id:
            node.update(copy.deepcopy(changes))
            data = node
    for edge in after["edges"]:
        if "id" in changes:
            edge["source"] = changes["id"] if edge["source"] == node_id else edge["source"]
            edge["target"] = changes["id"] if edge["target"] == node_id else edge["target"]
    _check_change(before, after)
    data = normalize_definition({"nodes": [data]})["nodes"][0]
    row.node_id = data["id"]
    row.type = data["type"]
    row.name = data["name"]
    row.config = data["config"]
    row.position = data["position"]
    row.retry = data["retry"]
    row.timeout = data["timeout"]
    row.on_error = data["on_error"]
    row.save()
    _touch(workflow)
    if set(changes) - {"position"}:  # moving a node on the canvas is not worth an audit entry
        audit(
            action="workflow.node_updated",
            actor=user,
            workspace=workflow.workspace_id,
            target=workflow,
            data={"node": node_id, "changed": sorted(changes)},
        )
    return row


@transaction.atomic
def workflow_node_remove(*, workflow: Workflow, user: User | None, node_id: str) -> None:
    """Remove one node and the edges touching it."""
    workflow, _before = _locked_draft(workflow, user)
    row = _find_node(workflow, node_id)
    row.delete()
    _touch(workflow)
    audit(
        action="workflow.node_removed",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"node": node_id},
    )


@transaction.atomic
def workflow_edge_add(
    *, workflow: Workflow, user: User | None, source: str, target: str, branch: str | None = None
) -> Edge:
    workflow, before = _locked_draft(workflow, user)
    after = copy.deepcopy(before)
    after["edges"].append({"source": source, "target": target, "branch": branch or None})
    _check_change(before, after)
    edge = Edge.objects.create(
        workflow=workflow,
        source=workflow.nodes.get(node_id=source),
        target=workflow.nodes.get(node_id=target),
        branch=branch or "",
    )
    _touch(workflow)
    audit(
        action="workflow.edge_added",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"source": source, "target": target, "branch": branch or ""},
    )
    return edge


@transaction.atomic
def workflow_edge_remove(
    *, workflow: Workflow, user: User | None, source: str, target: str, branch: str | None = None
) -> None:
    workflow, _before = _locked_draft(workflow, user)
    deleted, _ = workflow.edges.filter(source__node_id=source, target__node_id=target, branch=branch or "").delete()
    if not deleted:
        label = f"{source} → {target}" + (f" [{branch}]" if branch else "")
        raise ValidationError({"edges": [f"The workflow has no edge {label}."]})
    _touch(workflow)
    audit(
        action="workflow.edge_removed",
        actor=user,
        workspace=workflow.workspace_id,
        target=workflow,
        data={"source": source, "target": target, "branch": branch or ""},
    )
