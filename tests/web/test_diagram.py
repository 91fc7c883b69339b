"""The diagram layout: layers top to bottom, branch labels, and drafts that are not valid yet."""

from __future__ import annotations

from workflows import diagram
from workflows.graph import GraphError


def _node(node_id: str, node_type: str = "template") -> dict:
    return {"id": node_id, "type": node_type, "config": {"template": "x"}}


def test_layers_and_branch_labels():
    definition = {
        "nodes": [_node("start"), _node("check", "condition"), _node("yes"), _node("no")],
        "edges": [
            {"source": "start", "target": "check"},
            {"source": "check", "target": "yes", "branch": "true"},
            {"source": "check", "target": "no", "branch": "false"},
        ],
    }
    drawn = diagram.build(definition, statuses={"start": "succeeded"})
    by_id = {n.id: n for n in drawn.nodes}
    assert by_id["start"].y < by_id["check"].y < by_id["yes"].y == by_id["no"].y
    assert by_id["yes"].x != by_id["no"].x
    assert by_id["check"].icon != "?" and by_id["check"].category == "control"
    assert by_id["start"].status == "succeeded"
    assert sorted(e.branch for e in drawn.edges) == ["", "false", "true"]
    assert all(e.path.startswith("M") for e in drawn.edges)


def test_a_cycle_and_errors_still_draw():
    definition = {
        "nodes": [_node("a"), _node("b"), _node("ghost", "no_such_type")],
        "edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "a"}, {"source": "a", "target": "missing"}],
    }
    errors = [
        GraphError("cycle", "a and b form a cycle", node="a"),
        GraphError("unknown_type", "Unknown", node="ghost"),
    ]
    drawn = diagram.build(definition, errors=errors)
    assert {n.id for n in drawn.nodes} == {"a", "b", "ghost"}
    by_id = {n.id: n for n in drawn.nodes}
    assert by_id["a"].errors == ["a and b form a cycle"] and by_id["ghost"].icon == "?"
    assert len(drawn.edges) == 2  # the edge to a missing node is not drawn


def test_empty_definition():
    drawn = diagram.build({"nodes": [], "edges": []})
    assert drawn.nodes == [] and drawn.width > 0 and drawn.height > 0
