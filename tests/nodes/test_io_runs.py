"""http_request and db_query inside real runs: the engine's retry, timeout and cancel policy, and no secrets
in anything a run stores (NodeRun rows, RunEvents) or logs."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

import pytest

from providers.choices import CredentialKind
from providers.credentials import credential_create
from runs.models import Run, RunEvent
from runs.services import run_cancel, run_start
from tests.providers.loopback import start_server
from workflows.services import workflow_create

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "e2e-secret-token-Q7w8e9r0t1y2u3"


@pytest.fixture
def http_server(settings):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    server = start_server()
    yield server
    server.stop()


def workflow(workspace, user, *nodes, edges=None, name="io"):
    definition = {"format": "graphwright/v1", "name": name, "nodes": list(nodes), "edges": edges or []}
    return workflow_create(workspace=workspace, user=user, name=name, definition=definition)


def start(wf, user, inputs=None) -> Run:
    return run_start(workflow=wf, user=user, inputs=inputs or {}, mode="sync")


def stored_blob(run: Run) -> str:
    """Everything a run keeps about itself, as text."""
    rows = [{"input": nr.input, "output": nr.output, "logs": nr.logs, "error": nr.error} for nr in run.node_runs.all()]
    events = list(RunEvent.objects.filter(run=run).values_list("data", flat=True))
    return json.dumps([rows, events, run.outputs, run.error], default=str)


def test_retry_sends_the_same_idempotency_key_each_attempt(workspace, user, http_server):
    fetch = {
        "id": "fetch",
        "type": "http_request",
        "config": {"url": http_server.url("/flaky?key=retry&fail=2")},
        "retry": {"max_attempts": 3, "backoff": "fixed", "initial_delay": 0.05},
    }
    run = start(workflow(workspace, user, fetch), user)
    assert run.status == "succeeded", run.error
    node_run = run.node_runs.get(node_id="fetch")
    assert node_run.attempt == 3 and node_run.output["json"] == {"attempt": 3}
    keys = {r.headers.get("Idempotency-Key") for r in http_server.requests}
    assert keys == {f"run:{run.pk}:node:fetch"}
    assert RunEvent.objects.filter(run=run, type="node.retrying").count() == 2


def test_a_client_error_is_not_retried(workspace, user, http_server):
    fetch = {
        "id": "fetch",
        "type": "http_request",
        "config": {"url": http_server.url("/status/404")},
        "retry": {"max_attempts": 3, "initial_delay": 0.05},
    }
    run = start(workflow(workspace, user, fetch), user)
    assert run.status == "failed" and "HTTP 404" in run.error
    assert len(http_server.requests) == 1


def test_a_blocked_destination_fails_the_run_with_a_clear_error(settings, workspace, user, http_server):
    settings.SSRF_ALLOWLIST = []
    fetch = {
        "id": "fetch",
        "type": "http_request",
        "config": {"url": http_server.url("/echo")},
        "retry": {"max_attempts": 3, "initial_delay": 0.05},
    }
    run = start(workflow(workspace, user, fetch), user)
    assert run.status == "failed" and "Destination blocked" in run.error
    assert run.node_runs.get(node_id="fetch").attempt == 1  # a refusal is not retried
    assert http_server.requests == []


@pytest.mark.timeout(60)
def test_node_timeout_aborts_the_request(workspace, user, http_server):
    fetch = {"id": "fetch", "type": "http_request", "config": {"url": http_server.url("/hang")}, "timeout": 0.5}
    run = start(workflow(workspace, user, fetch), user)
    assert run.status == "failed"
    assert "Timed out after 0.5 s" in run.node_runs.get(node_id="fetch").error
    assert not http_server.release.is_set()


@pytest.mark.timeout(60)
def test_cancel_aborts_the_request_in_flight(workspace, user, http_server):
    fetch = {"id": "fetch", "type": "http_request", "config": {"url": http_server.url("/hang")}}
    wf = workflow(workspace, user, fetch)

    def cancel_when_hanging():
        http_server.hanging.wait(20)
        run_cancel(run=Run.objects.get(workflow=wf), user=user)

    canceller = threading.Thread(target=cancel_when_hanging, daemon=True)
    canceller.start()
    run = start(wf, user)
    canceller.join(5)
    assert run.status == "cancelled"
    assert run.node_runs.get(node_id="fetch").status == "cancelled"
    assert not http_server.release.is_set()  # the server never answered


def test_secrets_stay_out_of_runs_events_and_logs(workspace, user, http_server, caplog):
    caplog.set_level(logging.DEBUG)
    credential_create(workspace=workspace, user=user, name="svc", kind=CredentialKind.HTTP_BEARER, secret=SECRET)
    fetch = {
        "id": "fetch",
        "type": "http_request",
        "config": {"url": http_server.url("/whoami"), "credential": "svc"},
    }
    use = {"id": "use", "type": "template", "config": {"template": "{{ nodes.fetch.output.json.authorization }}"}}
    run = start(workflow(workspace, user, fetch, use, edges=[{"source": "fetch", "target": "use"}]), user)
    assert run.status == "succeeded", run.error
    assert http_server.last().headers["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in stored_blob(run)
    assert SECRET not in caplog.text


@pytest.mark.timeout(60)
def test_db_query_timeout_is_retried_then_fails(workspace, user, tmp_path):
    path = tmp_path / "t.db"
    sqlite3.connect(path).close()
    credential_create(
        workspace=workspace, user=user, name="db", kind=CredentialKind.DATABASE, secret=f"sqlite:///{path}"
    )
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    query = {
        "id": "q",
        "type": "db_query",
        "config": {"credential": "db", "sql": slow, "timeout": 0.3},
        "retry": {"max_attempts": 2, "initial_delay": 0.05},
    }
    run = start(workflow(workspace, user, query), user)
    assert run.status == "failed" and "timeout" in run.error
    assert run.node_runs.get(node_id="q").attempt == 2
    assert str(path) not in stored_blob(run)


def test_db_query_insert_in_a_run_uses_the_run_key(workspace, user, tmp_path):
    path = tmp_path / "t.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, run_key TEXT UNIQUE)")
    credential_create(
        workspace=workspace, user=user, name="db", kind=CredentialKind.DATABASE, secret=f"sqlite:///{path}"
    )
    save = {
        "id": "save",
        "type": "db_query",
        "config": {
            "credential": "db",
            "mode": "insert",
            "table": "orders",
            "rows": {"item": "{{ inputs.item }}"},
            "idempotency_column": "run_key",
        },
    }
    wf = workflow(workspace, user, save)
    run = start(wf, user, {"item": "'); DROP TABLE orders; --"})
    assert run.status == "succeeded", run.error
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT item, run_key FROM orders").fetchall()
    assert rows == [("'); DROP TABLE orders; --", f"run:{run.pk}:node:save")]
