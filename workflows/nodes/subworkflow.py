"""``subworkflow``: run another workflow of the workspace as a child run and return its outputs."""

from __future__ import annotations

from typing import Any

from . import register
from .base import NodeContext, NodeError, NodeType

MAX_DEPTH = 8


def find_workflow(ctx: NodeContext, reference: Any):
    """The workflow named by id or slug, in the run's workspace only."""
    from workflows.models import Workflow

    workflows = Workflow.objects.filter(workspace_id=ctx.workspace_id, archived_at__isnull=True)
    if isinstance(reference, int) or (isinstance(reference, str) and reference.isdigit()):
        workflow = workflows.filter(pk=int(reference)).first()
    else:
        workflow = workflows.filter(slug=str(reference)).first()
    if workflow is None:
        raise NodeError(f"No workflow {reference!r} in this workspace.", retryable=False)
    return workflow


def run_child(ctx: NodeContext, workflow, inputs: dict[str, Any]) -> Any:
    """Run ``workflow`` synchronously as a child of the current run; return its outputs or raise."""
    from django.core.exceptions import PermissionDenied, ValidationError

    from accounts.models import User
    from runs.models import Run
    from runs.services import run_start

    parent = Run.objects.get(pk=ctx.run_id)
    depth, ancestor = 0, parent
    while ancestor.parent_id:
        depth += 1
        ancestor = Run.objects.only("parent_id").get(pk=ancestor.parent_id)
        if depth >= MAX_DEPTH:
            raise NodeError(f"Sub-workflows nest deeper than {MAX_DEPTH} levels.", retryable=False)
    ctx.check_cancelled()
    user = User.objects.filter(pk=ctx.user_id).first() if ctx.user_id else None
    try:
        child = run_start(
            workflow=workflow,
            user=user,
            inputs=inputs,
            trigger="subworkflow",
            mode="sync",
            parent=parent,
            parent_node_id=ctx.node_id,
            token_budget=parent.token_budget,
        )
    except (ValidationError, PermissionDenied) as exc:
        raise NodeError(f"Cannot start {workflow.name!r}: {exc}", retryable=False) from exc
    ctx.check_cancelled()
    if child.status != "succeeded":
        raise NodeError(
            f"Sub-workflow {workflow.name!r} (run {child.pk}) {child.status}: {child.error}",
            retryable=False,
            data={"child_run_id": child.pk},
        )
    return child


@register
class SubworkflowNode(NodeType):
    name = "subworkflow"
    label = "Sub-workflow"
    description = "Run another workflow with the given inputs; its outputs become this node's output."
    icon = "⧉"
    config_schema = {
        "type": "object",
        "required": ["workflow"],
        "properties": {
            "workflow": {"type": ["string", "integer"], "description": "The workflow's id or slug."},
            "inputs": {"type": "object", "description": "Inputs for the child run; strings are templates."},
        },
        "additionalProperties": False,
    }

    def execute(self, ctx: NodeContext) -> Any:
        from runs.models import Run

        # A redelivered run reuses the child that already succeeded for this node.
        done = Run.objects.filter(parent_id=ctx.run_id, parent_node_id=ctx.node_id, status="succeeded").first()
        if done is not None:
            return {"run_id": done.pk, "outputs": done.outputs}
        workflow = find_workflow(ctx, ctx.config["workflow"])
        inputs = ctx.render(ctx.config.get("inputs") or {})
        child = run_child(ctx, workflow, inputs)
        return {"run_id": child.pk, "outputs": child.outputs}
