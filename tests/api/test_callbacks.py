"""Completion callbacks: POSTed through the SSRF guard to a real loopback server, retried with backoff."""

from __future__ import annotations

import ast
import json

import pytest
from django_q.brokers import get_broker
from django_q.models import Schedule
from django_q.signing import SignedPackage

from accounts.models import AuditLog
from runs.callbacks import DELIVER_FUNC, deliver_run_callback

pytestmark = pytest.mark.django_db(transaction=True)  # the engine runs nodes in threads


def queued_callback_tasks(broker) -> list[dict]:
    tasks = []
    while True:
        package = broker.dequeue()
        if not package:
            return tasks
        for _ack_id, payload in package:
            task = SignedPackage.loads(payload)
            if task["func"] == DELIVER_FUNC:
                tasks.append(task)


def test_finished_run_is_posted_to_its_callback_url(api_client, workflow, loopback):
    broker = get_broker()
    broker.purge_queue()
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"text": "hi"}, "mode": "sync", "callback_url": loopback.url + "/done"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    tasks = queued_callback_tasks(broker)
    assert [task["args"] for task in tasks] == [(run_id, 1)]
    # What the worker does with the queued task:
    assert deliver_run_callback(*tasks[0]["args"]) == "sent"
    request = loopback.requests[0]
    assert request["method"] == "POST" and request["path"] == "/done"
    payload = json.loads(request["body"])
    assert payload["run_id"] == run_id and payload["status"] == "succeeded" and payload["outputs"]
    assert AuditLog.objects.filter(action="run.callback_sent", target_id=str(run_id)).exists()


def test_failed_delivery_is_retried_with_backoff(api_client, workflow, loopback):
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"text": "hi"}, "mode": "sync", "callback_url": loopback.url + "/flaky"},
        format="json",
    )
    run_id = response.json()["id"]
    loopback.statuses += [503]
    assert deliver_run_callback(run_id, 1) == "retrying"
    retry = Schedule.objects.get(func=DELIVER_FUNC)
    assert retry.schedule_type == Schedule.ONCE
    args = ast.literal_eval(retry.args)
    assert args == (run_id, 2)
    assert deliver_run_callback(*args) == "sent"
    assert len(loopback.requests) == 2


def test_callback_to_a_private_address_is_refused_not_retried(api_client, workflow, settings):
    settings.SSRF_ALLOWLIST = []
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"text": "hi"}, "mode": "sync", "callback_url": "http://127.0.0.1:9/steal"},
        format="json",
    )
    run_id = response.json()["id"]
    assert deliver_run_callback(run_id, 1) == "failed"
    assert not Schedule.objects.filter(func=DELIVER_FUNC).exists()
    entry = AuditLog.objects.get(action="run.callback_failed", target_id=str(run_id))
    assert "127.0.0.1" in entry.data["reason"]


def test_invalid_callback_url_is_400(api_client, workflow):
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": {"text": "hi"}, "callback_url": "not a url"},
        format="json",
    )
    assert response.status_code == 400
    assert "callback_url" in response.json()["error"]["fields"]


def test_each_run_of_a_batch_is_posted_to_the_callback_url(api_client, workflow, loopback):
    from runs import engine

    broker = get_broker()
    broker.purge_queue()
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/batch/",
        {"inputs": [{"text": "a"}, {"text": "b"}], "callback_url": loopback.url + "/batch"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    ids = [run["id"] for run in response.json()["runs"]]
    engine.execute_runs(ids)
    tasks = queued_callback_tasks(broker)
    assert sorted(task["args"] for task in tasks) == [(ids[0], 1), (ids[1], 1)]
    for task in tasks:
        assert deliver_run_callback(*task["args"]) == "sent"
    payloads = {json.loads(r["body"])["run_id"]: json.loads(r["body"]) for r in loopback.requests}
    assert set(payloads) == set(ids) and {p["status"] for p in payloads.values()} == {"succeeded"}
    bad = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/batch/",
        {"inputs": [{"text": "a"}], "callback_url": "not a url"},
        format="json",
    )
    assert bad.status_code == 400 and "callback_url" in bad.json()["error"]["fields"]
