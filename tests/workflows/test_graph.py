"""Graph validation: every error kind, each naming its node/edge, all reported at once; ordering."""

from __future__ import annotations

import pytest

from tests.workflows.conftest import doc, edge, node
from workflows.graph import (
    GraphCycleError,
    adjacency,
    start_nodes,
    topological_layers,
    topological_order,
    validate_definition,
)


def codes(definition) -> list[str]:
    return [error.code for error in validate_definition(definition)]


def only(definition, code: str):
    errors = [error for error in validate_definition(definition) if error.code == code]
    assert errors, f"expected a {code} error, got {validate_definition(definition)}"
    return errors


def test_valid_definition_has_no_errors(linear_doc):
    assert validate_definition(linear_doc) == []


def test_minimal_definition_is_valid():
    assert validate_definition({"nodes": [{"id": "only", "type": "test_echo"}]}) == []


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ([], None),
        ({"nodes": "x"}, "nodes"),
        ({"nodes": [node("a")], "edges": {}}, "edges"),
        ({"format": "graphwright/v0", "nodes": [node("a")]}, "format"),
        ({"name": "", "nodes": [node("a")]}, "name"),
        ({"tags": "a,b", "nodes": [node("a")]}, "tags"),
        ({"inputs": {"x": {"type": "text"}}, "nodes": [node("a")]}, "inputs.x.type"),
        ({"inputs": ["x"], "nodes": [node("a")]}, "inputs"),
        ({"vars": [1], "nodes": [node("a")]}, "vars"),
        ({"settings": {"timeout": -1}, "nodes": [node("a")]}, "settings.timeout"),
        ({"settings": {"max_concurrent_runs": 0}, "nodes": [node("a")]}, "settings.max_concurrent_runs"),
        ({"nodes": ["a"]}, "nodes[0]"),
        ({"nodes": [{"id": "has space", "type": "test_echo"}]}, "nodes[0].id"),
        ({"nodes": [node("a"), node("b")], "edges": [{"source": "a"}]}, "edges[0]"),
    ],
)
def test_malformed_documents_and_fields(definition, field):
    errors = only(definition, "malformed")
    if field:
        assert field in {error.field for error in errors}


def test_node_without_type_is_malformed():
    (error,) = only({"nodes": [{"id": "a"}]}, "malformed")
    assert error.node == "a"


def test_unknown_node_type_names_the_node():
    (error,) = only(doc([node("a"), node("b", "no_such_type")], [edge("a", "b")]), "unknown_type")
    assert error.node == "b"
    assert "no_such_type" in error.message


def test_duplicate_node_ids():
    (error,) = only(doc([node("a"), node("a")]), "duplicate_node")
    assert error.node == "a"


def test_edge_to_a_missing_node():
    (error,) = only(doc([node("a")], [edge("a", "ghost")]), "missing_node")
    assert error.edge == ("a", "ghost", "")
    assert "ghost" in error.message


def test_self_loop():
    (error,) = only(doc([node("a"), node("b")], [edge("a", "b"), edge("b", "b")]), "self_loop")
    assert error.edge == ("b", "b", "")


def test_duplicate_edge():
    (error,) = only(doc([node("a"), node("b")], [edge("a", "b"), edge("a", "b")]), "duplicate_edge")
    assert error.edge == ("a", "b", "")


def test_cycle_names_the_nodes_on_it():
    definition = doc(
        [node("start"), node("x"), node("y"), node("z"), node("end")],
        [edge("start", "x"), edge("x", "y"), edge("y", "z"), edge("z", "x"), edge("z", "end")],
    )
    (error,) = only(definition, "cycle")
    for name in ("x", "y", "z"):
        assert name in error.message
    assert "start" not in error.message.split(":")[0]
    assert "x → y → z → x" in error.message


def test_no_start_node():
    errors = codes(doc([node("a"), node("b")], [edge("a", "b"), edge("b", "a")]))
    assert "no_start" in errors
    assert "cycle" in errors


def test_empty_workflow_has_no_start():
    (error,) = only(doc([]), "no_start")
    assert "no nodes" in error.message


def test_unreachable_node():
    # c and d only feed each other: no start node reaches them.
    definition = doc([node("a"), node("b"), node("c"), node("d")], [edge("a", "b"), edge("c", "d"), edge("d", "c")])
    unreachable = {error.node for error in only(definition, "unreachable")}
    assert unreachable == {"c", "d"}


def test_unreachable_when_cycle_hangs_off_the_graph():
    definition = doc(
        [node("a"), node("b"), node("c"), node("d")],
        [edge("a", "b"), edge("c", "d"), edge("d", "c"), edge("c", "b")],
    )
    assert {error.node for error in only(definition, "unreachable")} == {"c", "d"}


def test_disconnected_components():
    definition = doc([node("a"), node("b"), node("c"), node("lonely")], [edge("a", "b"), edge("b", "c")])
    (error,) = only(definition, "disconnected")
    assert error.node == "lonely"
    assert "lonely" in error.message


def test_branch_the_source_does_not_offer():
    definition = doc([node("a", "test_branchy"), node("b")], [edge("a", "b", "maybe")])
    (error,) = only(definition, "bad_branch")
    assert error.edge == ("a", "b", "maybe")
    assert "'yes'" in error.message  # says what it offers


def test_branch_offered_by_config_is_accepted():
    definition = doc([node("a", "test_branchy", config={"cases": ["maybe"]}), node("b")], [edge("a", "b", "maybe")])
    assert validate_definition(definition) == []


def test_branch_on_a_type_without_branches():
    (error,) = only(doc([node("a"), node("b")], [edge("a", "b", "yes")]), "bad_branch")
    assert error.node == "a"


def test_error_branch_needs_on_error_branch():
    assert "bad_branch" in codes(doc([node("a"), node("b")], [edge("a", "b", "error")]))
    assert validate_definition(doc([node("a", on_error="branch"), node("b")], [edge("a", "b", "error")])) == []


def test_config_failing_the_schema_names_node_and_field():
    nodes = [node("a", config={"delay": "soon", "extra": 1}), node("b", "test_branchy", config={"url": "ftp:"})]
    definition = doc(nodes, [edge("a", "b")])
    errors = only(definition, "invalid_config")
    assert {(error.node, error.field) for error in errors} >= {("a", "config.delay"), ("b", "config.url")}
    assert any(error.node == "a" and error.field == "config" for error in errors)  # additionalProperties


def test_config_must_be_an_object():
    (error,) = only(doc([node("a", config=[1, 2])]), "invalid_config")
    assert error.node == "a"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"retry": {"max_attempts": 1000}}, "retry.max_attempts"),
        ({"retry": {"max_attempts": True}}, "retry.max_attempts"),
        ({"retry": {"backoff": "random"}}, "retry.backoff"),
        ({"retry": {"initial_delay": -1}}, "retry.initial_delay"),
        ({"retry": {"max_delay": "1s"}}, "retry.max_delay"),
        ({"retry": {"attempts": 3}}, "retry.attempts"),
        ({"retry": 3}, "retry"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"on_error": "ignore"}, "on_error"),
        ({"position": [1, 2]}, "position"),
        ({"name": 5}, "name"),
    ],
)
def test_bad_policy_values(extra, field):
    (error,) = only(doc([node("a", **extra)]), "invalid_field")
    assert error.node == "a"
    assert error.field == field


def test_all_errors_are_reported_at_once():
    definition = doc(
        [node("a"), node("a"), node("b", "nope"), node("c", timeout=-5), node("d", config={"delay": "x"})],
        [edge("a", "ghost"), edge("c", "c"), edge("a", "d", "nah")],
    )
    assert set(codes(definition)) >= {
        "duplicate_node",
        "unknown_type",
        "invalid_field",
        "invalid_config",
        "missing_node",
        "self_loop",
        "bad_branch",
        "disconnected",
    }


def test_errors_serialize():
    (error,) = only(doc([node("a")], [edge("a", "ghost", "x")]), "missing_node")
    assert error.as_dict() == {
        "code": "missing_node",
        "message": error.message,
        "node": None,
        "edge": ["a", "ghost", "x"],
        "field": None,
    }


def test_topological_layers_follow_the_longest_path():
    definition = doc(
        [node("a"), node("b"), node("c"), node("d"), node("e")],
        [edge("a", "b"), edge("a", "c"), edge("b", "d"), edge("c", "d"), edge("a", "d"), edge("d", "e")],
    )
    assert topological_layers(definition) == [["a"], ["b", "c"], ["d"], ["e"]]
    assert topological_order(definition) == ["a", "b", "c", "d", "e"]


def test_topological_layers_with_several_starts(linear_doc):
    definition = doc([node("x"), node("y"), node("z")], [edge("y", "z"), edge("x", "z")])
    assert topological_layers(definition) == [["x", "y"], ["z"]]
    assert topological_layers(linear_doc) == [["a"], ["b"], ["c", "d"], ["e"]]


def test_topological_layers_refuse_a_cycle_unless_lenient():
    definition = doc([node("a"), node("b"), node("c")], [edge("a", "b"), edge("b", "c"), edge("c", "b")])
    with pytest.raises(GraphCycleError) as info:
        topological_layers(definition)
    assert info.value.nodes == ["b", "c"]
    assert topological_layers(definition, strict=False) == [["a"], ["b", "c"]]


def test_adjacency_and_start_nodes(linear_doc):
    parents, children = adjacency(linear_doc)
    assert children["b"] == [("c", "yes"), ("d", "big")]
    assert parents["e"] == [("d", "error"), ("c", "")]
    assert parents["a"] == []
    assert start_nodes(linear_doc) == ["a"]
