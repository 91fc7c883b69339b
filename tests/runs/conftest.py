"""Engine fixtures: workflows built from a definition (with a pinned version) and test node types."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from runs.models import Run
from workflows.models import Workflow, WorkflowVersion

from .nodes import GATES, SPANS, register_test_nodes, unregister_test_nodes

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def _test_nodes():
    register_test_nodes()
    SPANS.clear()
    yield
    for gate in GATES.values():
        gate.set()
    GATES.clear()
    unregister_test_nodes()


def chain(*nodes: dict[str, Any]) -> list[dict[str, str]]:
    return [{"source": a["id"], "target": b["id"]} for a, b in itertools.pairwise(nodes)]


def tpl(node_id: str, template: Any = "{{ inputs }}", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "template", "config": {"template": template}, **extra}


@pytest.fixture
def make_workflow(workspace, user):
    """make_workflow(nodes, edges, **fields) -> a Workflow with a WorkflowVersion of that graph."""

    def make(nodes: list[dict], edges: list[dict] | None = None, **fields: Any) -> Workflow:
        n = next(_counter)
        definition = {
            "format": "graphwright/v1",
            "name": fields.get("name", f"wf {n}"),
            "nodes": nodes,
            "edges": edges or [],
        }
        if "variables" in fields:
            definition["variables"] = fields["variables"]
        if "timeout" in fields:
            definition["timeout"] = fields["timeout"]
        workflow = Workflow.objects.create(
            workspace=workspace,
            created_by=user,
            name=fields.pop("name", f"wf {n}"),
            slug=fields.pop("slug", f"wf-{n}"),
            **fields,
        )
        WorkflowVersion.objects.create(workflow=workflow, number=1, definition=definition, author=user)
        return workflow

    return make


def node_runs(run: Run) -> dict[str, Any]:
    return {nr.node_id: nr for nr in run.node_runs.all()}


# The events of a run through a chain of two nodes that both succeed.
CHAIN2_EVENTS = [
    "run.queued",
    "run.started",
    "node.started",
    "node.succeeded",
    "node.started",
    "node.succeeded",
    "run.succeeded",
]


def event_types(run: Run) -> list[str]:
    return list(run.events.order_by("seq").values_list("type", flat=True))
