"""Leases, redelivery, recovery after a dead worker, bounded attempts, the reaper and its schedule."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from runs import events
from runs.choices import NodeRunStatus, RunStatus
from runs.models import NodeRun, Run
from runs.services import run_execute, run_start
from runs.tasks import REAPER_SCHEDULE_NAME, ensure_schedules, execute_run, reap_runs

from .conftest import chain, event_types, node_runs, tpl
from .nodes import GATES

pytestmark = pytest.mark.django_db(transaction=True)


def effect(node_id, path, **extra):
    return {"id": node_id, "type": "test_effect", "config": {"path": str(path)}, **extra}


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_duplicate_delivery_while_the_lease_is_alive_does_nothing(make_workflow, user, tmp_path):
    out = tmp_path / "effects.txt"
    nodes = [effect("e", out), {"id": "g", "type": "test_gate", "config": {"gate": "dup"}}]
    run = run_start(workflow=make_workflow(nodes, chain(*nodes)), user=user)
    done = {}

    def work():
        try:
            done["run"] = execute_run(run.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 10
    while not NodeRun.objects.filter(run=run, node_id="g", status="running").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert execute_run(run.pk) == f"run {run.pk}: nothing to do"  # the second delivery
    GATES.setdefault("dup", threading.Event()).set()
    thread.join(10)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempt == 1
    assert len(lines(out)) == 1


def crash_mid_run(run: Run, finished: list[str], interrupted: str) -> None:
    """Leave the rows exactly as a worker killed with -9 would: nodes done, one running, lease stale."""
    events.transition_run(run, RunStatus.RUNNING, attempt=1, lease_owner="dead-worker", lease_expires_at=timezone.now())
    NodeRun.objects.bulk_create(
        [NodeRun(run=run, node_id=n, node_type="test_effect") for n in [*finished, interrupted]]
    )
    for node_id in finished:
        nr = NodeRun.objects.get(run=run, node_id=node_id)
        events.transition_node(nr, NodeRunStatus.RUNNING, attempt=1)
        events.transition_node(nr, NodeRunStatus.SUCCEEDED, output={"node": node_id, "attempt": 1})
    events.transition_node(NodeRun.objects.get(run=run, node_id=interrupted), NodeRunStatus.RUNNING, attempt=1)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_recovery_reuses_finished_nodes_and_retries_the_interrupted_one(make_workflow, user, tmp_path):
    out = tmp_path / "effects.txt"
    nodes = [effect("a", out), effect("b", out), effect("c", out), tpl("d", "{{ nodes.a.output.node }}")]
    run = run_start(workflow=make_workflow(nodes, chain(*nodes)), user=user)
    crash_mid_run(run, finished=["a"], interrupted="b")
    assert reap_runs()["expired"] == 1
    run = run_execute(run=run)  # what the re-enqueued task does
    assert run.status == "succeeded", run.error
    assert run.attempt == 2
    nr = node_runs(run)
    assert nr["a"].attempt == 1  # reused, not executed again
    assert nr["b"].attempt == 2  # the interrupted node ran as a new attempt
    assert nr["d"].output == "a"
    assert [line.split()[1:3] for line in lines(out)] == [["b", "2"], ["c", "1"]]
    assert "run.recovered" in event_types(run)


def test_attempts_are_bounded_then_the_run_fails_clearly(make_workflow, user, tmp_path, settings):
    settings.GW_MAX_RUN_ATTEMPTS = 2
    out = tmp_path / "effects.txt"
    nodes = [effect("a", out), effect("b", out)]
    run = run_start(workflow=make_workflow(nodes, chain(*nodes)), user=user)
    crash_mid_run(run, finished=["a"], interrupted="b")
    Run.objects.filter(pk=run.pk).update(attempt=2)
    run = run_execute(run=run)
    assert run.status == "failed"
    assert "interrupted 2 times" in run.error and "GW_MAX_RUN_ATTEMPTS=2" in run.error
    assert node_runs(run)["b"].status == "failed"
    assert lines(out) == []
    assert reap_runs()["expired"] == 0  # nothing left for the reaper


def test_a_worker_that_lost_its_lease_stops_writing(make_workflow, user, settings):
    settings.GW_HEARTBEAT_SECONDS = 0
    nodes = [{"id": "g", "type": "test_gate", "config": {"gate": "lease"}}, tpl("after")]
    run = run_start(workflow=make_workflow(nodes, chain(*nodes)), user=user)
    result = {}

    def work():
        try:
            result["run"] = run_execute(run=run)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.monotonic() + 10
    while not NodeRun.objects.filter(run=run, node_id="g", status="running").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    Run.objects.filter(pk=run.pk).update(lease_owner="another-worker")  # someone took over
    thread.join(10)
    assert not thread.is_alive()
    GATES.setdefault("lease", threading.Event()).set()
    nr = node_runs(Run.objects.get(pk=run.pk))
    assert nr["after"].status == "pending"  # the old worker wrote nothing more
    assert Run.objects.get(pk=run.pk).status == "running"


def test_reaper_enqueues_stale_queued_runs_and_schedule_is_idempotent(make_workflow, user):
    run = run_start(workflow=make_workflow([tpl("a")]), user=user)
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert reap_runs()["queued"] == 1
    from django_q.models import Schedule

    ensure_schedules()
    ensure_schedules()
    schedules = Schedule.objects.filter(name=REAPER_SCHEDULE_NAME)
    assert schedules.count() == 1
    assert schedules.get().func == "runs.tasks.reap_runs"


def test_a_broken_definition_fails_the_run_with_the_reason(make_workflow, user):
    from workflows.models import WorkflowVersion

    workflow = make_workflow([tpl("a")])
    broken = WorkflowVersion.objects.create(workflow=workflow, number=2, definition={"nodes": [{"type": "template"}]})
    run = run_start(workflow=workflow, user=user, version=broken)
    assert execute_run(run.pk) == f"run {run.pk}: failed"
    run.refresh_from_db()
    assert run.status == "failed"
    assert "Engine error: KeyError" in run.error
