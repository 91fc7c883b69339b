"""The engine on a real database: ordering, branching, skipping, merge, parallelism, policy."""

from __future__ import annotations

import pytest

from runs.models import Artifact
from runs.services import run_start

from .conftest import chain, event_types, node_runs, tpl
from .nodes import SPANS

pytestmark = pytest.mark.django_db(transaction=True)


def start(workflow, user, inputs=None):
    return run_start(workflow=workflow, user=user, inputs=inputs or {}, mode="sync")


def test_chain_passes_outputs_and_ends_with_sink_outputs(make_workflow, user):
    a = tpl("a", "{{ inputs.name | upper }}")
    b = tpl("b", "hello {{ nodes.a.output }} from {{ vars.place }} run {{ run.id }}")
    workflow = make_workflow([a, b], chain(a, b), variables={"place": "Paris"})
    run = start(workflow, user, {"name": "ada"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"b": f"hello ADA from Paris run {run.pk}"}
    assert event_types(run)[:2] == ["run.queued", "run.started"]
    assert event_types(run)[-1] == "run.succeeded"
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    result = Artifact.objects.get(run=run, name="result.json")
    assert result.file.read().decode().count("hello ADA") == 1
    nr = node_runs(run)
    assert nr["a"].idempotency_key == f"run:{run.pk}:node:a"
    assert nr["b"].status == "succeeded" and nr["b"].attempt == 1


def test_condition_takes_one_branch_and_skips_the_other(make_workflow, user):
    nodes = [
        {"id": "check", "type": "condition", "config": {"expression": "inputs.n > 3"}},
        tpl("big", "big"),
        tpl("small", "small"),
        tpl("after_small", "after {{ nodes.small.output }}"),
        {"id": "join", "type": "merge", "config": {}},
    ]
    edges = [
        {"source": "check", "target": "big", "branch": "true"},
        {"source": "check", "target": "small", "branch": "false"},
        {"source": "small", "target": "after_small"},
        {"source": "big", "target": "join"},
        {"source": "after_small", "target": "join"},
    ]
    workflow = make_workflow(nodes, edges)
    run = start(workflow, user, {"n": 5})
    assert run.status == "succeeded", run.error
    nr = node_runs(run)
    assert nr["check"].branch == "true"
    assert nr["big"].status == "succeeded"
    assert nr["small"].status == "skipped" and nr["after_small"].status == "skipped"
    assert nr["join"].status == "succeeded" and nr["join"].output == {"big": "big"}
    assert "node.skipped" in event_types(run)

    run = start(workflow, user, {"n": 1})
    nr = node_runs(run)
    assert nr["big"].status == "skipped"
    assert nr["join"].output == {"after_small": "after small"}


def test_switch_picks_a_case_or_default(make_workflow, user):
    nodes = [
        {
            "id": "route",
            "type": "switch",
            "config": {
                "value": "inputs.kind",
                "cases": [{"name": "a", "equals": "alpha"}, {"name": "b", "when": "value == 'beta'"}],
            },
        },
        tpl("on_a", "A"),
        tpl("on_b", "B"),
        tpl("other", "other"),
    ]
    edges = [
        {"source": "route", "target": "on_a", "branch": "a"},
        {"source": "route", "target": "on_b", "branch": "b"},
        {"source": "route", "target": "other", "branch": "default"},
    ]
    workflow = make_workflow(nodes, edges)
    for kind, taken in (("alpha", "on_a"), ("beta", "on_b"), ("gamma", "other")):
        run = start(workflow, user, {"kind": kind})
        assert run.outputs == {taken: taken.replace("on_", "").upper() if taken != "other" else "other"}
        assert {k for k, v in node_runs(run).items() if v.status == "skipped"} == {"on_a", "on_b", "other"} - {taken}


def test_independent_branches_overlap_in_time(make_workflow, user):
    nodes = [tpl("root", "go")] + [{"id": f"s{i}", "type": "test_sleep", "config": {"seconds": 0.5}} for i in range(3)]
    nodes.append({"id": "join", "type": "merge", "config": {"mode": "list"}})
    edges = [{"source": "root", "target": f"s{i}"} for i in range(3)] + [
        {"source": f"s{i}", "target": "join"} for i in range(3)
    ]
    run = start(make_workflow(nodes, edges), user)
    assert run.status == "succeeded", run.error
    spans = [s for s in SPANS if s[1] == run.pk]
    assert len(spans) == 3
    latest_start = max(s[2] for s in spans)
    earliest_end = min(s[3] for s in spans)
    assert latest_start < earliest_end  # all three were sleeping at the same moment
    assert len(node_runs(run)["join"].output) == 3


def test_retry_counts_then_succeeds(make_workflow, user):
    node = {
        "id": "f",
        "type": "test_flaky",
        "config": {"fail_times": 2},
        "retry": {"max_attempts": 3, "backoff": "exponential", "initial_delay": 0.01},
    }
    run = start(make_workflow([node]), user)
    assert run.status == "succeeded", run.error
    assert node_runs(run)["f"].attempt == 3
    types = event_types(run)
    assert types.count("node.retrying") == 2
    assert types.count("node.started") == 3


def test_retry_exhausted_fails_the_run(make_workflow, user):
    node = {
        "id": "f",
        "type": "test_flaky",
        "config": {"fail_times": 5},
        "retry": {"max_attempts": 2, "initial_delay": 0},
    }
    run = start(make_workflow([node, tpl("after")], [{"source": "f", "target": "after"}]), user)
    assert run.status == "failed"
    assert "failure #2" in run.error
    nr = node_runs(run)
    assert nr["f"].status == "failed" and nr["f"].attempt == 2
    assert nr["after"].status == "pending"


def test_non_retryable_error_is_not_retried(make_workflow, user):
    node = {
        "id": "f",
        "type": "test_flaky",
        "config": {"fail_times": 5, "retryable": False},
        "retry": {"max_attempts": 4},
    }
    run = start(make_workflow([node]), user)
    assert run.status == "failed"
    assert node_runs(run)["f"].attempt == 1


def test_timeout_really_stops_waiting_and_retries(make_workflow, user):
    node = {
        "id": "slow",
        "type": "test_sleep",
        "config": {"seconds": 30},
        "timeout": 0.3,
        "retry": {"max_attempts": 2, "initial_delay": 0},
    }
    run = start(make_workflow([node]), user)
    assert run.status == "failed"
    assert "Timed out after 0.3 s" in run.error
    assert node_runs(run)["slow"].attempt == 2
    assert (run.finished_at - run.started_at).total_seconds() < 10


@pytest.mark.parametrize(
    "node_type,config", [("test_flaky", {"fail_times": 9}), ("template", {"template": "{{ 1 / 0 }}"})]
)
def test_on_error_continue_passes_the_error_on(make_workflow, user, node_type, config):
    nodes = [
        {"id": "bad", "type": node_type, "config": config, "on_error": "continue"},
        tpl("next", "got: {{ nodes.bad.output.error }}"),
    ]
    run = start(make_workflow(nodes, chain(*nodes)), user)
    assert run.status == "succeeded", run.error
    nr = node_runs(run)
    assert nr["bad"].status == "failed"
    assert nr["next"].output.startswith("got: ") and len(nr["next"].output) > len("got: ")


def test_on_error_branch_follows_the_error_edge_only(make_workflow, user):
    nodes = [
        {"id": "bad", "type": "test_flaky", "config": {"fail_times": 9}, "on_error": "branch"},
        tpl("ok_path", "fine"),
        tpl("handler", "handled {{ nodes.bad.output.error }}"),
    ]
    edges = [{"source": "bad", "target": "ok_path"}, {"source": "bad", "target": "handler", "branch": "error"}]
    run = start(make_workflow(nodes, edges), user)
    assert run.status == "succeeded", run.error
    nr = node_runs(run)
    assert nr["ok_path"].status == "skipped"
    assert nr["handler"].output == "handled failure #1"
    assert run.outputs == {"handler": "handled failure #1"}


def test_on_error_branch_not_taken_on_success(make_workflow, user):
    nodes = [tpl("good", "ok", on_error="branch"), tpl("next", "n"), tpl("handler", "h")]
    edges = [{"source": "good", "target": "next"}, {"source": "good", "target": "handler", "branch": "error"}]
    run = start(make_workflow(nodes, edges), user)
    assert node_runs(run)["handler"].status == "skipped"
    assert run.outputs == {"next": "n"}


def test_run_level_timeout(make_workflow, user):
    node = {"id": "slow", "type": "test_sleep", "config": {"seconds": 30}}
    run = start(make_workflow([node], timeout=0.5), user)
    assert run.status == "failed"
    assert "timed out" in run.error
    assert node_runs(run)["slow"].status == "cancelled"


def test_oversized_output_becomes_an_artifact(make_workflow, user, settings):
    settings.GW_OUTPUT_MAX_BYTES = 500
    nodes = [
        {"id": "big", "type": "test_big", "config": {"size": 2000}},
        tpl("len", "{{ nodes.big.output.data | length }}"),
    ]
    run = start(make_workflow(nodes, chain(*nodes)), user)
    assert run.status == "succeeded", run.error
    nr = node_runs(run)
    assert "$artifact" in nr["big"].output
    artifact = Artifact.objects.get(pk=nr["big"].output["$artifact"]["id"])
    assert artifact.size > 2000 and artifact.node_run_id == nr["big"].pk
    assert nr["len"].output == "2000"  # downstream saw the real output
    assert nr["big"].logs[0]["message"] == "making a big output"


def test_output_that_is_not_json_fails_readably(make_workflow, user):
    run = start(make_workflow([{"id": "x", "type": "test_not_json", "config": {}}]), user)
    assert run.status == "failed"
    assert "not JSON" in run.error


def test_unknown_node_type_fails_readably(make_workflow, user):
    run = start(make_workflow([{"id": "x", "type": "no_such_type", "config": {}}]), user)
    assert run.status == "failed"
    assert "Unknown node type 'no_such_type'" in run.error


def test_template_json_output_and_structured_values(make_workflow, user):
    nodes = [
        {"id": "j", "type": "template", "config": {"template": '{"n": {{ inputs.n }}}', "output": "json"}},
        {
            "id": "s",
            "type": "template",
            "config": {"template": {"list": "{{ [1, 2, nodes.j.output.n] }}", "t": "n={{ nodes.j.output.n }}"}},
        },
    ]
    run = start(make_workflow(nodes, chain(*nodes)), user, {"n": 7})
    assert run.outputs == {"s": {"list": [1, 2, 7], "t": "n=7"}}


def test_a_long_chain_of_inline_nodes_spans_several_steps(make_workflow, user):
    nodes = [tpl("n0", "{{ inputs.word }}")] + [
        tpl(f"n{i}", f"{{{{ nodes.n{i - 1}.output }}}}.") for i in range(1, 150)
    ]
    run = start(make_workflow(nodes, chain(*nodes)), user, {"word": "go"})
    assert run.status == "succeeded", run.error
    assert run.outputs == {"n149": "go" + "." * 149}
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert event_types(run).count("node.succeeded") == 150
