"""Run services: inputs, cancel, rerun, approvals, sub-workflows, loops, limits, delete, sandbox."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connections

from accounts.choices import Role
from runs.models import Artifact, NodeRun, Run, RunEvent
from runs.services import artifact_save, run_cancel, run_delete, run_execute, run_rerun, run_resume, run_start

from .conftest import chain, event_types, node_runs, tpl
from .nodes import GATES

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def in_thread(fn):
    result = {}

    def target():
        try:
            result["value"] = fn()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


# -- inputs -------------------------------------------------------------------------------------
def test_inputs_are_validated_field_by_field(make_workflow, user):
    workflow = make_workflow(
        [tpl("a")],
        inputs={"n": {"type": "integer", "required": True}, "tag": {"type": "string", "default": "x"}},
    )
    with pytest.raises(ValidationError) as info:
        run_start(workflow=workflow, user=user, inputs={"n": "seven", "extra": 1})
    assert set(info.value.message_dict) == {"inputs.n", "inputs.extra"}
    with pytest.raises(ValidationError) as info:
        run_start(workflow=workflow, user=user, inputs={})
    assert "required" in info.value.message_dict["inputs.n"][0]
    assert not Run.objects.exists()
    run = run_start(workflow=workflow, user=user, inputs={"n": 3}, mode="sync")
    assert run.inputs == {"n": 3, "tag": "x"}


def test_a_viewer_may_not_start_runs(make_workflow, make_member):
    workflow = make_workflow([tpl("a")])
    with pytest.raises(PermissionDenied):
        run_start(workflow=workflow, user=make_member(Role.VIEWER))
    run = run_start(workflow=workflow, user=make_member(Role.RUNNER), mode="sync")
    assert run.status == "succeeded"


# -- cancel -------------------------------------------------------------------------------------
def test_cancel_a_queued_run_it_never_starts(make_workflow, user):
    run = run_start(workflow=make_workflow([tpl("a")]), user=user)
    assert run.status == "queued"
    run_cancel(run=run, user=user)
    run = run_execute(run=run)
    assert run.status == "cancelled"
    assert not NodeRun.objects.filter(run=run).exclude(status="pending").exists()
    assert "run.started" not in event_types(run)


def test_cancel_a_running_run_stops_it_quickly(make_workflow, user):
    nodes = [{"id": "slow", "type": "test_sleep", "config": {"seconds": 60}}, tpl("after")]
    run = run_start(workflow=make_workflow(nodes, chain(*nodes)), user=user)
    thread, _ = in_thread(lambda: run_execute(run=run))
    assert wait_for(lambda: NodeRun.objects.filter(run=run, node_id="slow", status="running").exists())
    run_cancel(run=Run.objects.get(pk=run.pk), user=user)
    thread.join(timeout=5)
    assert not thread.is_alive()  # the worker let go of the run within seconds, not 60
    run.refresh_from_db()
    assert run.status == "cancelled"
    nr = node_runs(run)
    assert nr["slow"].status == "cancelled"
    assert nr["after"].status == "pending"
    assert "run.cancelled" in event_types(run)


# -- rerun --------------------------------------------------------------------------------------
def test_rerun_from_the_failed_node_reuses_upstream(make_workflow, user, tmp_path):
    effects = tmp_path / "effects.txt"
    nodes = [
        {"id": "effect", "type": "test_effect", "config": {"path": str(effects)}},
        {"id": "flaky", "type": "test_flaky", "config": {"fail_while": str(tmp_path / "broken")}},
        tpl("last", "{{ nodes.flaky.output.attempt }}"),
    ]
    workflow = make_workflow(nodes, chain(*nodes))
    broken = tmp_path / "broken"
    broken.touch()
    first = run_start(workflow=workflow, user=user, mode="sync")
    assert first.status == "failed"
    broken.unlink()  # the cause is fixed: the rerun's flaky node passes
    second = run_rerun(run=first, user=user, mode="sync")
    assert second.status == "succeeded", second.error
    assert second.outputs == {"last": "1"}
    assert second.rerun_of_id == first.pk and second.rerun_from == "flaky"
    nr = node_runs(second)
    assert nr["effect"].reused_from_id == node_runs(first)["effect"].pk
    assert effects.read_text().count("\n") == 1  # the side effect did not run again
    assert nr["flaky"].reused_from_id is None


def test_rerun_from_a_named_node(make_workflow, user):
    nodes = [tpl("a", "A"), tpl("b", "{{ nodes.a.output }}B"), tpl("c", "{{ nodes.b.output }}C")]
    workflow = make_workflow(nodes, chain(*nodes))
    first = run_start(workflow=workflow, user=user, mode="sync")
    second = run_rerun(run=first, from_node="b", user=user, mode="sync")
    assert second.status == "succeeded" and second.outputs == {"c": "ABC"}
    nr = node_runs(second)
    assert nr["a"].reused_from_id is not None
    assert nr["b"].reused_from_id is None and nr["c"].reused_from_id is None
    with pytest.raises(ValidationError):
        run_rerun(run=first, from_node="nope", user=user)


# -- approvals ----------------------------------------------------------------------------------
def approval_workflow(make_workflow, timeout=None):
    config = {"message": "Ship {{ inputs.what }}?"}
    if timeout:
        config["timeout"] = timeout
    nodes = [
        {"id": "ask", "type": "approval", "config": config},
        tpl("yes", "approved by {{ nodes.ask.output.decided_by }}"),
        tpl("no", "rejected"),
        tpl("late", "timed out"),
    ]
    edges = [
        {"source": "ask", "target": "yes", "branch": "approved"},
        {"source": "ask", "target": "no", "branch": "rejected"},
        {"source": "ask", "target": "late", "branch": "timeout"},
    ]
    return make_workflow(nodes, edges)


def test_approval_waits_then_resumes_down_the_chosen_branch(make_workflow, user):
    workflow = approval_workflow(make_workflow)
    run = run_start(workflow=workflow, user=user, inputs={"what": "v2"}, mode="sync")
    assert run.status == "waiting"
    assert run.lease_owner == ""  # the worker is free
    ask = node_runs(run)["ask"]
    assert ask.status == "waiting" and ask.output["message"] == "Ship v2?"
    with pytest.raises(ValidationError):
        run_resume(run=run, node_id="ask", decision="maybe", user=user)
    run = run_resume(run=run, node_id="ask", decision="approve", user=user, mode="sync")
    assert run.status == "succeeded", run.error
    assert run.outputs == {"yes": "approved by alice"}
    assert {n for n, nr in node_runs(run).items() if nr.status == "skipped"} == {"no", "late"}
    types = event_types(run)
    assert "run.waiting" in types and "node.waiting" in types and "run.resumed" in types
    with pytest.raises(ValidationError):
        run_resume(run=run, node_id="ask", decision="approve", user=user)

    rejected = run_resume(
        run=run_start(workflow=workflow, user=user, inputs={"what": "v3"}, mode="sync"),
        node_id="ask",
        decision="reject",
        user=user,
        mode="sync",
    )
    assert rejected.outputs == {"no": "rejected"}


def test_approval_timeout_follows_the_timeout_branch_via_the_reaper(make_workflow, user):
    from runs.tasks import reap_runs

    run = run_start(
        workflow=approval_workflow(make_workflow, timeout=0.2), user=user, inputs={"what": "x"}, mode="sync"
    )
    assert run.status == "waiting"
    time.sleep(0.3)
    assert reap_runs()["approvals_timed_out"] == 1
    run = run_execute(run=run)  # the worker the reaper enqueued
    assert run.status == "succeeded", run.error
    assert run.outputs == {"late": "timed out"}


def test_approval_restricted_to_approvers(make_workflow, user, make_member):
    nodes = [{"id": "ask", "type": "approval", "config": {"approvers": ["alice"]}}, tpl("done")]
    run = run_start(
        workflow=make_workflow(nodes, [{"source": "ask", "target": "done", "branch": "approved"}]),
        user=user,
        mode="sync",
    )
    with pytest.raises(PermissionDenied):
        run_resume(run=run, node_id="ask", decision="approve", user=make_member(Role.RUNNER))
    assert run_resume(run=run, node_id="ask", decision="approve", user=user, mode="sync").status == "succeeded"


# -- sub-workflows and loops -----------------------------------------------------------------------
def test_subworkflow_returns_the_child_outputs(make_workflow, user):
    make_workflow([tpl("double", "{{ inputs.x * 2 }}")], slug="child")
    parent_nodes = [
        {"id": "call", "type": "subworkflow", "config": {"workflow": "child", "inputs": {"x": "{{ inputs.n }}"}}}
    ]
    run = run_start(workflow=make_workflow(parent_nodes), user=user, inputs={"n": 21}, mode="sync")
    assert run.status == "succeeded", run.error
    output = node_runs(run)["call"].output
    assert output["outputs"] == {"double": "42"}
    child_run = Run.objects.get(pk=output["run_id"])
    assert child_run.parent_id == run.pk and child_run.parent_node_id == "call" and child_run.trigger == "subworkflow"


def test_subworkflow_failure_fails_the_node(make_workflow, user):
    make_workflow([{"id": "bad", "type": "test_flaky", "config": {"fail_times": 9}}], slug="broken")
    nodes = [{"id": "call", "type": "subworkflow", "config": {"workflow": "broken"}, "on_error": "continue"}]
    run = run_start(workflow=make_workflow(nodes), user=user, mode="sync")
    assert "failed" in node_runs(run)["call"].error


def test_loop_over_items_with_a_subworkflow_in_parallel(make_workflow, user):
    make_workflow([tpl("sq", "{{ item * item }} at {{ index }}")], slug="square")
    nodes = [
        {"id": "each", "type": "loop", "config": {"items": "{{ inputs.xs }}", "workflow": "square", "parallelism": 3}}
    ]
    run = run_start(workflow=make_workflow(nodes), user=user, inputs={"xs": [1, 2, 3, 4]}, mode="sync")
    assert run.status == "succeeded", run.error
    assert node_runs(run)["each"].output == [{"sq": f"{x * x} at {i}"} for i, x in enumerate([1, 2, 3, 4])]
    assert Run.objects.filter(parent=run, parent_node_id="each").count() == 4


def test_loop_inline_body_and_while(make_workflow, user):
    nodes = [
        {"id": "each", "type": "loop", "config": {"items": [3, 4], "body": "{{ item + index }}"}},
        {"id": "grow", "type": "loop", "config": {"while": "index < 3", "body": "{{ index }}", "max_iterations": 10}},
        {"id": "cap", "type": "loop", "config": {"while": "true", "body": "x", "max_iterations": 5}},
    ]
    run = run_start(workflow=make_workflow(nodes), user=user, mode="sync")
    assert run.status == "succeeded", run.error
    nr = node_runs(run)
    assert nr["each"].output == [3, 5]
    assert nr["grow"].output == [0, 1, 2]
    assert nr["cap"].output == ["x"] * 5


def test_loop_refuses_too_many_items(make_workflow, user):
    nodes = [{"id": "each", "type": "loop", "config": {"items": list(range(5)), "body": "x", "max_iterations": 3}}]
    run = run_start(workflow=make_workflow(nodes), user=user, mode="sync")
    assert run.status == "failed" and "max_iterations" in run.error


# -- concurrency limit ------------------------------------------------------------------------------
def test_runs_over_the_limit_stay_queued_and_start_in_order(make_workflow, user):
    nodes = [{"id": "g", "type": "test_gate", "config": {"gate": "limit"}}]
    workflow = make_workflow(nodes, max_concurrent_runs=1)
    a, b, c = (run_start(workflow=workflow, user=user) for _ in range(3))
    thread, _ = in_thread(lambda: run_execute(run=a))
    assert wait_for(lambda: Run.objects.get(pk=a.pk).status == "running")
    assert run_execute(run=c).status == "queued"  # over the limit
    assert run_execute(run=b).status == "queued"
    GATES.setdefault("limit", threading.Event()).set()
    thread.join(timeout=10)
    assert Run.objects.get(pk=a.pk).status == "succeeded"
    assert run_execute(run=c).status == "queued"  # b is older: it goes first
    assert run_execute(run=b).status == "succeeded"
    assert run_execute(run=c).status == "succeeded"


# -- delete -------------------------------------------------------------------------------------
def test_delete_a_finished_run_with_events_and_files(make_workflow, user):
    run = run_start(workflow=make_workflow([tpl("a")]), user=user, mode="sync")
    artifact = Artifact.objects.get(run=run, name="result.json")
    path = artifact.file.path
    assert RunEvent.objects.filter(run=run).exists()
    import os

    assert os.path.exists(path)
    run_delete(run=run, user=user)
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not RunEvent.objects.filter(run_id=run.pk).exists()
    assert not os.path.exists(path)


def test_delete_refuses_an_active_run(make_workflow, user):
    run = run_start(workflow=make_workflow([tpl("a")]), user=user)
    with pytest.raises(ValidationError):
        run_delete(run=run, user=user)


def test_artifact_save_kinds(make_workflow, user):
    run = run_start(workflow=make_workflow([tpl("a")]), user=user, mode="sync")
    text = artifact_save(run=run, name="note.txt", content="héllo")
    data = artifact_save(run=run, name="data.json", content={"a": 1})
    raw = artifact_save(run=run, name="blob.bin", content=b"\x00\x01")
    assert text.content_type == "text/plain" and text.size == len("héllo".encode())
    assert data.content_type == "application/json"
    assert raw.size == 2 and len(raw.sha256) == 64
    with pytest.raises(ValidationError):
        artifact_save(run=run, name="../evil", content="x")


# -- sandbox -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template,refused",
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", True),
        ("{{ inputs.__class__.__init__.__globals__ }}", True),
        ("{{ run.items.__self__.__class__ }}", False),
        ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", True),
        ("{{ self._TemplateReference__context }}", False),
        ("{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", True),
        ("{{ lipsum.__globals__ }}", True),
        ("{{ open('/etc/passwd').read() }}", True),
    ],
)
def test_sandbox_escapes_are_refused(make_workflow, user, template, refused):
    run = run_start(workflow=make_workflow([tpl("evil", template)]), user=user, mode="sync")
    evil = node_runs(run)["evil"]
    if refused:
        assert run.status == "failed"
        assert "unsafe" in evil.error or "undefined" in evil.error
    else:  # the sandbox hands back nothing: no class, no globals, no context object
        assert run.status == "succeeded"
        assert evil.output == ""


def test_time_parked_waiting_does_not_count_against_the_run_timeout(make_workflow, user):
    nodes = [{"id": "ask", "type": "approval", "config": {}}, tpl("done", "ok")]
    workflow = make_workflow(nodes, [{"source": "ask", "target": "done", "branch": "approved"}], timeout=1)
    run = run_start(workflow=workflow, user=user, mode="sync")
    assert run.status == "waiting"
    time.sleep(1.2)  # longer than the run timeout, but parked
    run = run_resume(run=run, node_id="ask", decision="approve", user=user, mode="sync")
    assert run.status == "succeeded", run.error
    assert run.outputs == {"done": "ok"}
