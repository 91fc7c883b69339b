"""The lease and the first step share one transaction, and a fresh run's writes are held back
until its end (``events.Deferred``): what a run leaves behind must be exactly what the step-by-step
writes would have left, in far fewer statements."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from runs import engine
from runs.models import Artifact, NodeRun, Run
from runs.services import run_cancel, run_execute, run_start

from .conftest import CHAIN2_EVENTS, chain, event_types, node_runs, tpl

pytestmark = pytest.mark.django_db(transaction=True)


def queued(workflow, user, inputs=None) -> Run:
    run = run_start(workflow=workflow, user=user, inputs=inputs or {})
    assert run.status == "queued"
    return run


def test_an_inline_run_is_written_in_one_transaction_of_a_few_statements(make_workflow, user):
    a, b = tpl("a", "{{ inputs.n + 1 }}"), tpl("b", "{{ nodes.a.output }}!")
    workflow = make_workflow([a, b], chain(a, b))
    warm = queued(workflow, user, {"n": 0})  # the pinned version is cached after its first run
    engine.execute_run(warm.pk)
    run = queued(workflow, user, {"n": 1})
    with CaptureQueriesContext(connection) as queries:
        engine.execute_run(run.pk)
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # The lock, result.json, the NodeRuns, the run row and the events; no per-node round trips.
    writes = [s for s in statements if s in ("INSERT", "UPDATE", "DELETE")]
    assert len(writes) <= 4, queries.captured_queries
    assert statements.count("COMMIT") <= 1 or connection.vendor == "sqlite"
    assert statements.count("SAVEPOINT") == 0
    run.refresh_from_db()
    assert run.status == "succeeded" and run.outputs == {"b": "2!"}
    assert run.started_at and run.finished_at and run.lease_owner == "" and run.attempt == 1


def test_the_held_back_writes_leave_the_same_rows_and_gap_free_events(make_workflow, user):
    a, b = tpl("a", "{{ inputs.n * 2 }}"), tpl("b", "{{ nodes.a.output }}")
    workflow = make_workflow([a, b], chain(a, b))
    run = queued(workflow, user, {"n": 21})
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert event_types(run) == CHAIN2_EVENTS
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, 8)) and run.event_seq == 7
    nr = node_runs(run)
    for node_id in ("a", "b"):
        assert nr[node_id].status == "succeeded" and nr[node_id].attempt == 1
        assert nr[node_id].idempotency_key == f"run:{run.pk}:node:{node_id}"
        assert nr[node_id].started_at and nr[node_id].finished_at and nr[node_id].duration_ms is not None
    assert nr["b"].output == "42"
    started = run.events.get(type="run.started")
    assert started.data == {"status": "running", "attempt": 1}
    assert Artifact.objects.filter(run=run, name="result.json").count() == 1


def test_an_oversized_output_in_the_first_step_links_its_artifact_to_the_node(make_workflow, user, settings):
    settings.GW_OUTPUT_MAX_BYTES = 100
    big = tpl("big", "{{ 'x' * 500 }}")
    workflow = make_workflow([big])
    run = queued(workflow, user)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    node_run = NodeRun.objects.get(run=run, node_id="big")
    artifact = Artifact.objects.get(run=run, node_run=node_run)
    assert artifact.file.read().decode() == '"' + "x" * 500 + '"'
    assert node_run.output["truncated"] is True


def test_a_node_failing_in_the_first_step_fails_the_run_with_its_reason(make_workflow, user):
    bad = {"id": "bad", "type": "no_such_type", "config": {}}
    workflow = make_workflow([bad])
    run = queued(workflow, user)
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and "no_such_type" in run.error
    assert NodeRun.objects.get(run=run, node_id="bad").status == "failed"
    assert event_types(run)[-2:] == ["node.failed", "run.failed"]
    seqs = list(run.events.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_database_error_in_the_first_transaction_fails_the_run_readably(make_workflow, user):
    """The NodeRuns of a fresh run are inserted at the end of its first transaction. A row that
    is already there (the unique (run, node_id) pair) breaks that transaction: it rolls back and the
    run still ends, as failed, with the reason, instead of being lost or stuck."""
    a = tpl("a", "{{ 1 }}")
    workflow = make_workflow([a])
    run = queued(workflow, user)
    NodeRun.objects.create(run=run, node_id="a", node_type="template")
    engine.execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "Engine error" in run.error and "IntegrityError" in run.error
    assert event_types(run)[-1] == "run.failed"


def test_a_cancelled_queued_run_is_not_started_by_a_late_delivery(make_workflow, user):
    a = tpl("a", "{{ 1 }}")
    workflow = make_workflow([a])
    run = queued(workflow, user)
    run_cancel(run=run, user=user)
    assert engine.execute_run(run.pk) is None
    run.refresh_from_db()
    assert run.status == "cancelled" and not NodeRun.objects.filter(run=run).exists()


def test_a_run_with_a_threaded_node_commits_its_running_rows_before_the_node_runs(make_workflow, user):
    """A non-inline node starts after the first transaction commits: its NodeRun is visible as
    running (from another connection) while it executes."""
    slow = {"id": "slow", "type": "test_gate", "config": {"gate": "first-step"}}
    workflow = make_workflow([tpl("a", "{{ 1 }}"), slow], [{"source": "a", "target": "slow"}])
    run = queued(workflow, user)
    import threading

    from .nodes import GATES

    seen: dict[str, str] = {}

    def watch() -> None:
        import time

        from django.db import connections

        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = NodeRun.objects.filter(run_id=run.pk, node_id="slow").values_list("status", flat=True).first()
                if row == "running":
                    seen["slow"] = row
                    seen["a"] = NodeRun.objects.get(run_id=run.pk, node_id="a").status
                    seen["run"] = Run.objects.get(pk=run.pk).status
                    break
                time.sleep(0.02)
        finally:
            GATES.setdefault("first-step", threading.Event()).set()
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    run = run_execute(run=run, force=True)
    watcher.join()
    assert seen == {"slow": "running", "a": "succeeded", "run": "running"}
    assert run.status == "succeeded", run.error
