"""Batches: ``run_start_many`` starts many runs in one transaction, and ``engine.execute_runs``
executes a chunk of them with one shared transaction for their first steps. What a batch leaves
behind must be what as many single runs would have left."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditLog
from runs import engine
from runs.models import Artifact, NodeRun, Run
from runs.services import run_cancel, run_start, run_start_many

from .conftest import CHAIN2_EVENTS, chain, event_types, node_runs, tpl
from .nodes import GATES, SPANS

pytestmark = pytest.mark.django_db(transaction=True)


def test_run_start_many_creates_queued_runs_with_their_event_and_audit_entry(make_workflow, user):
    workflow = make_workflow([tpl("a", "{{ inputs.n * 2 }}")])
    runs = run_start_many(workflow=workflow, user=user, inputs=[{"n": 1}, {"n": 2}, {"n": 3}], idempotency_key="k")
    assert [run.inputs for run in runs] == [{"n": 1}, {"n": 2}, {"n": 3}]
    stored = list(Run.objects.filter(pk__in=[run.pk for run in runs]).order_by("id"))
    assert [run.pk for run in stored] == [run.pk for run in runs]
    assert {run.status for run in stored} == {"queued"}
    assert {run.version.number for run in stored} == {1}
    assert [run.idempotency_key for run in stored] == ["k:0", "k:1", "k:2"]
    for run in stored:
        assert event_types(run) == ["run.queued"] and run.event_seq == 1
        assert AuditLog.objects.filter(action="run.started", target_id=str(run.pk), actor=user).count() == 1


def test_one_bad_item_starts_nothing_and_names_its_index(make_workflow, user):
    workflow = make_workflow([tpl("a")], inputs={"n": {"type": "integer", "required": True}})
    with pytest.raises(ValidationError) as caught:
        run_start_many(workflow=workflow, user=user, inputs=[{"n": 1}, {"n": "two"}, {}, {"n": 4, "x": 1}])
    errors = caught.value.message_dict
    assert errors["inputs[1].n"] == ["Expected integer, got str."]
    assert errors["inputs[2].n"] == ["This input is required."]
    assert "inputs[3].x" in errors and len(errors) == 3
    assert not Run.objects.exists()
    for bad in ([], "x", None, [{"n": 1}, "not an object"]):
        with pytest.raises(ValidationError):
            run_start_many(workflow=workflow, user=user, inputs=bad)
    assert not Run.objects.exists()


def test_a_batch_larger_than_the_limit_is_refused(make_workflow, user, settings):
    settings.GW_BATCH_MAX_RUNS = 2
    workflow = make_workflow([tpl("a")])
    with pytest.raises(ValidationError) as caught:
        run_start_many(workflow=workflow, user=user, inputs=[{}, {}, {}])
    assert "At most 2" in str(caught.value)
    assert not Run.objects.exists()


def test_a_chunk_of_inline_runs_is_written_in_one_transaction_of_a_few_statements(make_workflow, user):
    a, b = tpl("a", "{{ inputs.n + 1 }}"), tpl("b", "{{ nodes.a.output }}!")
    workflow = make_workflow([a, b], chain(a, b))
    engine.execute_run(run_start(workflow=workflow, user=user, inputs={"n": 0}).pk)  # caches the version
    runs = run_start_many(workflow=workflow, user=user, inputs=[{"n": n} for n in range(20)])
    with CaptureQueriesContext(connection) as queries:
        results = engine.execute_runs([run.pk for run in runs])
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # One lock for the chunk; NodeRuns, result.json files, run rows and events: one statement each.
    assert statements.count("SELECT") == 1, queries.captured_queries
    assert len([s for s in statements if s in ("INSERT", "UPDATE", "DELETE")]) <= 4, queries.captured_queries
    assert statements.count("COMMIT") <= 1 or connection.vendor == "sqlite"
    assert [run.status for run in results] == ["succeeded"] * 20
    for n, run in enumerate(runs):
        run.refresh_from_db()
        assert run.status == "succeeded" and run.outputs == {"b": f"{n + 1}!"}
        assert run.started_at and run.finished_at and run.lease_owner == "" and run.attempt == 1
        assert event_types(run) == CHAIN2_EVENTS
        assert list(run.events.order_by("seq").values_list("seq", flat=True)) == list(range(1, 8))
        assert run.event_seq == 7
        nr = node_runs(run)
        assert nr["b"].output == f"{n + 1}!" and nr["b"].idempotency_key == f"run:{run.pk}:node:b"
        result = Artifact.objects.get(run=run, name="result.json")
        with result.file.open("rb") as handle:
            assert b'"b"' in handle.read()


def test_runs_that_go_on_after_their_first_step_continue_concurrently(make_workflow, user):
    sleep = {"id": "s", "type": "test_sleep", "config": {"seconds": 0.4}}
    workflow = make_workflow([sleep])
    runs = run_start_many(workflow=workflow, user=user, inputs=[{}, {}, {}])
    results = engine.execute_runs([run.pk for run in runs])
    assert [run.status for run in results] == ["succeeded"] * 3
    spans = sorted((start, end) for node_id, _, start, end in SPANS if node_id == "s")
    assert len(spans) == 3
    assert spans[-1][0] < spans[0][1], "the three runs' nodes ran one after another"
    for run in runs:
        run.refresh_from_db()
        assert run.status == "succeeded" and run.outputs == {"s": {"slept": 0.4, "node": "s"}}
        assert event_types(run)[-1] == "run.succeeded"


def test_a_chunk_skips_what_is_not_queued_and_fails_only_the_failing_run(make_workflow, user):
    good = make_workflow([tpl("a", "{{ inputs.n }}")])
    runs = run_start_many(workflow=good, user=user, inputs=[{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}])
    run_cancel(run=runs[1], user=user)
    engine.execute_run(runs[2].pk)
    broken = make_workflow([tpl("a", "{{ inputs.n | nosuchfilter }}")])
    bad = run_start(workflow=broken, user=user, inputs={"n": 5})
    results = engine.execute_runs([runs[0].pk, runs[1].pk, runs[2].pk, bad.pk, runs[3].pk])
    statuses = [run.status if run else None for run in results]
    assert statuses == ["succeeded", None, None, "failed", "succeeded"]
    runs[1].refresh_from_db()
    assert runs[1].status == "cancelled" and not runs[1].node_runs.exists()
    assert event_types(runs[2]).count("run.started") == 1  # finished before: not executed again
    bad.refresh_from_db()
    assert bad.status == "failed" and "nosuchfilter" in bad.error


def test_a_workflow_with_a_concurrency_limit_is_executed_run_by_run(make_workflow, user):
    workflow = make_workflow([tpl("a", "{{ inputs.n }}")], max_concurrent_runs=1)
    runs = run_start_many(workflow=workflow, user=user, inputs=[{"n": 1}, {"n": 2}])
    results = engine.execute_runs([run.pk for run in runs])
    assert [run.status for run in results] == ["succeeded", "succeeded"]
    first, second = (Run.objects.get(pk=run.pk) for run in runs)
    assert first.finished_at <= second.started_at


def test_a_database_error_in_the_shared_transaction_falls_back_to_one_run_at_a_time(make_workflow, user):
    workflow = make_workflow([tpl("a", "{{ inputs.n }}")])
    runs = run_start_many(workflow=workflow, user=user, inputs=[{"n": 1}, {"n": 2}, {"n": 3}])
    # A corrupt queued run: a NodeRun it should not have yet. Its insert breaks the shared transaction.
    NodeRun.objects.create(run=runs[1], node_id="a", node_type="template")
    results = engine.execute_runs([run.pk for run in runs])
    assert [run.status for run in results] == ["succeeded", "failed", "succeeded"]
    for run in runs:
        run.refresh_from_db()
    assert "IntegrityError" in runs[1].error
    assert runs[0].outputs == {"a": "1"} and runs[2].outputs == {"a": "3"}
    assert event_types(runs[0]).count("run.started") == 1  # the rolled-back attempt left nothing


def test_a_cancel_reaches_a_run_of_a_chunk_that_goes_on(make_workflow, user):
    gate = {"id": "g", "type": "test_gate", "config": {"gate": "batch-cancel"}}
    workflow = make_workflow([gate])
    runs = run_start_many(workflow=workflow, user=user, inputs=[{}, {}])

    def work() -> None:
        try:
            engine.execute_runs([run.pk for run in runs])
        finally:
            connections.close_all()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        for _ in range(100):
            if NodeRun.objects.filter(run__in=runs, status="running").count() == 2:
                break
            threading.Event().wait(0.05)
        run_cancel(run=runs[0], user=user)
        threading.Event().wait(0.5)
        GATES.setdefault("batch-cancel", threading.Event()).set()
    finally:
        worker.join(10)
    assert not worker.is_alive()
    for run in runs:
        run.refresh_from_db()
    assert runs[0].status == "cancelled" and runs[1].status == "succeeded"
    assert node_runs(runs[0])["g"].status == "cancelled"


def test_only_inline_workflows_are_enqueued_in_chunks(make_workflow, user, settings):
    from django_q.brokers import get_broker

    settings.GW_RUN_CHUNK = 4
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "workers": 2}
    broker = get_broker()
    inline = make_workflow([tpl("a"), tpl("b")], chain(tpl("a"), tpl("b")))
    heavy = make_workflow([{"id": "s", "type": "test_sleep", "config": {"seconds": 0}}])
    assert engine.inline_only({"nodes": [tpl("a")]}) and not engine.inline_only({"nodes": []})
    assert not engine.inline_only({"nodes": [tpl("a", timeout=5)]})
    before = broker.queue_size()
    run_start_many(workflow=inline, user=user, inputs=[{}] * 10)
    assert broker.queue_size() - before == 3  # 4 + 4 + 2, at least as many as the 2 workers
    run_start_many(workflow=inline, user=user, inputs=[{}] * 3)
    assert broker.queue_size() - before == 5  # 2 + 1: spread over both workers
    run_start_many(workflow=heavy, user=user, inputs=[{}] * 3)
    assert broker.queue_size() - before == 8  # one task per run
    broker.purge_queue()


def test_a_single_start_task_takes_a_backlog_of_inline_runs_along(make_workflow, user, settings):
    from runs import tasks

    settings.GW_RUN_CHUNK = 4
    inline = make_workflow([tpl("a", "{{ inputs.n }}")])
    heavy = make_workflow([{"id": "s", "type": "test_sleep", "config": {"seconds": 0}}])
    limited = make_workflow([tpl("a")], max_concurrent_runs=5)
    first = run_start(workflow=inline, user=user, inputs={"n": 0})
    others = [
        run_start(workflow=heavy, user=user),  # real work: keeps its own task
        run_start(workflow=limited, user=user),  # under a concurrency limit: admitted one by one
        run_start(workflow=inline, user=user, inputs={"n": 1}),
        run_start(workflow=inline, user=user, inputs={"n": 2}),  # cancelled below
        run_start(workflow=inline, user=user, inputs={"n": 3}),
        run_start(workflow=inline, user=user, inputs={"n": 4}),
        run_start(workflow=inline, user=user, inputs={"n": 5}),  # beyond GW_RUN_CHUNK - 1
    ]
    run_cancel(run=others[3], user=user)
    assert tasks.execute_run(first.pk) == f"run {first.pk}: succeeded"
    statuses = [Run.objects.get(pk=run.pk).status for run in [first, *others]]
    assert statuses == ["succeeded", "queued", "queued", "succeeded", "cancelled", "succeeded", "succeeded", "queued"]
    assert Run.objects.get(pk=others[5].pk).outputs == {"a": "4"}
    # The queue message of a run taken along finds it finished and does nothing.
    assert tasks.execute_run(others[4].pk) == f"run {others[4].pk}: nothing to do"
    assert event_types(others[4]).count("run.started") == 1
    # A run with real work takes nothing along.
    assert tasks.execute_run(others[0].pk) == f"run {others[0].pk}: succeeded"
    assert Run.objects.get(pk=others[6].pk).status == "queued"
