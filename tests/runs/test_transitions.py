"""State machines: every illegal transition is refused; a cancel is never overwritten."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from runs import engine, events
from runs.choices import NODE_TRANSITIONS, RUN_TRANSITIONS, IllegalTransition, NodeRunStatus, RunStatus
from runs.models import NodeRun, Run
from runs.services import run_cancel, run_start

from .conftest import tpl

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued_run(make_workflow, user):
    return run_start(workflow=make_workflow([tpl("a")]), user=user, mode="async")


def _force_status(run: Run, status: str) -> Run:
    Run.objects.filter(pk=run.pk).update(status=status)
    run.refresh_from_db()
    return run


ILLEGAL_RUN = [(old, new) for old in RunStatus.values for new in RunStatus.values if new not in RUN_TRANSITIONS[old]]
ILLEGAL_NODE = [
    (old, new) for old in NodeRunStatus.values for new in NodeRunStatus.values if new not in NODE_TRANSITIONS[old]
]


@pytest.mark.parametrize("old,new", ILLEGAL_RUN)
def test_every_illegal_run_transition_is_refused(queued_run, old, new):
    run = _force_status(queued_run, old)
    before = run.event_seq
    with pytest.raises(IllegalTransition):
        events.transition_run(run, new)
    run.refresh_from_db()
    assert run.status == old
    assert run.event_seq == before  # no event written either


@pytest.mark.parametrize("old,new", ILLEGAL_NODE)
def test_every_illegal_node_transition_is_refused(queued_run, old, new):
    node_run = NodeRun.objects.create(run=queued_run, node_id="a", node_type="template", status=old)
    with pytest.raises(IllegalTransition):
        events.transition_node(node_run, new)
    node_run.refresh_from_db()
    assert node_run.status == old


def test_legal_transitions_write_status_and_event_together(queued_run):
    events.transition_run(queued_run, RunStatus.RUNNING)
    events.transition_run(queued_run, RunStatus.WAITING)
    events.transition_run(queued_run, RunStatus.RUNNING, data={"resumed": True})
    events.transition_run(queued_run, RunStatus.SUCCEEDED, outputs={"a": 1})
    run = Run.objects.get(pk=queued_run.pk)
    assert run.status == "succeeded" and run.outputs == {"a": 1} and run.finished_at
    assert list(run.events.values_list("type", flat=True)) == [
        "run.queued",
        "run.started",
        "run.waiting",
        "run.resumed",
        "run.succeeded",
    ]
    assert list(run.events.values_list("seq", flat=True)) == [1, 2, 3, 4, 5]


def test_node_transition_refused_once_the_run_ended(queued_run):
    node_run = NodeRun.objects.create(run=queued_run, node_id="a", node_type="template")
    events.transition_node(node_run, NodeRunStatus.RUNNING, attempt=1)
    run_cancel(run=queued_run)
    with pytest.raises(events.RunFinished):
        events.transition_node(node_run, NodeRunStatus.SUCCEEDED, output=1)
    events.transition_node(node_run, NodeRunStatus.CANCELLED)  # cancelling is still allowed
    assert NodeRun.objects.get(pk=node_run.pk).status == "cancelled"


def test_cancel_and_late_success_race_cancel_always_wins(make_workflow, user):
    """Threads race a cancel against a finishing 'succeeded'; whichever commits first, a
    cancelled run is never overwritten and the event log matches the final status."""
    workflow = make_workflow([tpl("a")])
    for _ in range(8):
        run = run_start(workflow=workflow, user=user, mode="async")
        events.transition_run(run, RunStatus.RUNNING)
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def cancel(run_id=run.pk, barrier=barrier, outcome=outcome):
            barrier.wait()
            try:
                outcome["cancel"] = run_cancel(run=Run.objects.get(pk=run_id)).status
            finally:
                connections.close_all()

        def succeed(run_id=run.pk, barrier=barrier, outcome=outcome):
            barrier.wait()
            try:
                engine.finish_run(Run.objects.get(pk=run_id), RunStatus.SUCCEEDED, outputs={})
                outcome["succeed"] = "ok"
            except IllegalTransition:
                outcome["succeed"] = "refused"
            finally:
                connections.close_all()

        threads = [threading.Thread(target=cancel), threading.Thread(target=succeed)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run.refresh_from_db()
        final_events = [t for t in run.events.values_list("type", flat=True) if t in ("run.cancelled", "run.succeeded")]
        assert len(final_events) == 1
        assert run.status == final_events[0].removeprefix("run.")
        if outcome["succeed"] == "refused":
            assert run.status == "cancelled"
        # and a late success after the cancel is refused outright
        if run.status == "cancelled":
            with pytest.raises(IllegalTransition):
                engine.finish_run(Run.objects.get(pk=run.pk), RunStatus.SUCCEEDED, outputs={})
            assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_concurrent_events_get_unique_gap_free_seq(queued_run):
    def write(n):
        try:
            for i in range(15):
                events.emit(queued_run.pk, "node.log", {"writer": n, "i": i})
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seqs = list(queued_run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 62))
