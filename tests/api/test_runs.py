"""Run API: start (async/sync), idempotency, file inputs, filters, actions, events, artifacts, access."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.choices import Role
from accounts.models import AuditLog
from runs.models import Artifact, Run
from runs.services import artifact_save, run_start

from .conftest import assert_error, echo_definition

pytestmark = pytest.mark.django_db(transaction=True)  # the engine runs nodes in threads


def start(client, workflow, body=None, **headers):
    return client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/", body or {"inputs": {"text": "hi"}}, format="json", **headers
    )


def test_async_start_is_202_and_queued_then_execute(api_client, workflow):
    response = start(api_client, workflow)
    assert response.status_code == 202, response.json()
    run = response.json()
    assert run["status"] == "queued" and run["trigger"] == "api" and run["inputs"] == {"text": "hi"}
    assert run["version"] == 1
    executed = api_client.post(f"/api/v1/runs/{run['id']}/execute/")
    assert executed.status_code == 200, executed.json()
    assert executed.json()["status"] == "succeeded"
    assert executed.json()["outputs"]
    assert {n["node_id"]: n["status"] for n in executed.json()["node_runs"]} == {
        "first": "succeeded",
        "second": "succeeded",
    }
    assert_error(api_client.post(f"/api/v1/runs/{run['id']}/execute/"), 409, "conflict")
    assert AuditLog.objects.filter(action="run.started", target_id=str(run["id"])).exists()


def test_sync_start_is_201_with_the_finished_run(api_client, workflow):
    response = start(api_client, workflow, {"inputs": {"text": "yo"}, "mode": "sync"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "succeeded"
    second = next(n for n in body["node_runs"] if n["node_id"] == "second")
    assert second["output"] == "yo!"


def test_bad_inputs_are_400_with_fields(api_client, workflow):
    error = assert_error(start(api_client, workflow, {"inputs": {"nope": 1}}), 400, "invalid")
    assert error["fields"]
    assert_error(start(api_client, workflow, {"inputs": "text"}), 400)
    assert_error(start(api_client, workflow, {"inputs": {"text": "x"}, "mode": "later"}), 400)
    assert Run.objects.count() == 0


def test_idempotency_key_same_body_same_run_different_body_409(api_client, workflow):
    first = start(api_client, workflow, HTTP_IDEMPOTENCY_KEY="order-42")
    assert first.status_code == 202
    again = start(api_client, workflow, HTTP_IDEMPOTENCY_KEY="order-42")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert Run.objects.count() == 1
    error = assert_error(
        start(api_client, workflow, {"inputs": {"text": "other"}}, HTTP_IDEMPOTENCY_KEY="order-42"), 409, "conflict"
    )
    assert "Idempotency-Key" in error["message"]
    other_key = start(api_client, workflow, HTTP_IDEMPOTENCY_KEY="order-43")
    assert other_key.json()["id"] != first.json()["id"]
    assert start(api_client, workflow).json()["id"] not in {first.json()["id"], other_key.json()["id"]}


def test_idempotency_keys_are_per_user(api_client, client_for, make_member, workflow):
    editor = make_member(Role.EDITOR)
    mine = start(api_client, workflow, HTTP_IDEMPOTENCY_KEY="k").json()["id"]
    theirs = start(client_for(editor), workflow, HTTP_IDEMPOTENCY_KEY="k").json()["id"]
    assert mine != theirs


def test_file_input_as_multipart_upload_is_stored_as_an_artifact(api_client, make_workflow):
    definition = echo_definition("Files")
    definition["inputs"] = {"text": {"type": "string", "required": True}, "doc": {"type": "file", "required": True}}
    workflow = make_workflow("Files", definition=definition)
    upload = SimpleUploadedFile("notes.txt", b"hello file", content_type="text/plain")
    response = api_client.post(
        f"/api/v1/workflows/{workflow.pk}/runs/",
        {"inputs": '{"text": "hi"}', "doc": upload, "mode": "sync"},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    run = response.json()
    assert run["status"] == "succeeded"
    doc = run["inputs"]["doc"]
    assert doc["name"] == "notes.txt" and doc["size"] == 10
    artifact = Artifact.objects.get(pk=doc["artifact_id"])
    assert artifact.run_id == run["id"]
    listed = api_client.get(f"/api/v1/runs/{run['id']}/artifacts/").json()
    assert doc["artifact_id"] in [a["id"] for a in listed["results"]]
    download = api_client.get(f"/api/v1/artifacts/{artifact.pk}/download/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b"hello file"
    bad = SimpleUploadedFile("x.txt", b"x")
    error = assert_error(
        api_client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": '{"text": "hi"}', "text": bad}),
        400,
    )
    assert "text" in error["fields"]


def test_list_filters(api_client, workflow, make_workflow, user):
    other = make_workflow("Other")
    a = run_start(workflow=workflow, user=user, inputs={"text": "a"}, mode="sync")
    b = run_start(workflow=other, user=user, inputs={"text": "b"}, trigger="webhook")
    ids = lambda r: sorted(x["id"] for x in r.json()["results"])  # noqa: E731
    assert ids(api_client.get("/api/v1/runs/")) == sorted([a.pk, b.pk])
    assert ids(api_client.get(f"/api/v1/runs/?workflow={workflow.pk}")) == [a.pk]
    assert ids(api_client.get("/api/v1/runs/?status=succeeded")) == [a.pk]
    assert ids(api_client.get("/api/v1/runs/?status=queued")) == [b.pk]
    assert ids(api_client.get("/api/v1/runs/?trigger=webhook")) == [b.pk]
    assert ids(api_client.get("/api/v1/runs/?trigger=manual&status=succeeded")) == [a.pk]
    assert_error(api_client.get("/api/v1/runs/?status=bogus"), 400)
    assert_error(api_client.get("/api/v1/runs/?workflow=x"), 400)
    page = api_client.get("/api/v1/runs/?limit=1").json()
    assert page["count"] == 2 and len(page["results"]) == 1 and page["next"]


def test_detail_events_cancel_rerun_delete(api_client, workflow, user):
    done = run_start(workflow=workflow, user=user, inputs={"text": "a"}, mode="sync")
    detail = api_client.get(f"/api/v1/runs/{done.pk}/").json()
    assert [n["node_id"] for n in detail["node_runs"]] == ["first", "second"]
    events = api_client.get(f"/api/v1/runs/{done.pk}/events/").json()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[0]["type"] == "run.queued" and events[-1]["type"] == "run.succeeded"
    later = api_client.get(f"/api/v1/runs/{done.pk}/events/?after=3").json()
    assert [e["seq"] for e in later] == seqs[3:]
    assert_error(api_client.post(f"/api/v1/runs/{done.pk}/cancel/"), 409)

    rerun = api_client.post(f"/api/v1/runs/{done.pk}/rerun/", {"from_node": "second"}, format="json")
    assert rerun.status_code == 202, rerun.json()
    assert rerun.json()["rerun_of"] == done.pk and rerun.json()["rerun_from"] == "second"

    queued = run_start(workflow=workflow, user=user, inputs={"text": "b"})
    assert_error(api_client.delete(f"/api/v1/runs/{queued.pk}/"), 409)
    cancelled = api_client.post(f"/api/v1/runs/{queued.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert AuditLog.objects.filter(action="run.cancelled", target_id=str(queued.pk)).exists()
    assert_error(api_client.post(f"/api/v1/runs/{queued.pk}/resume/", {"node": "x", "decision": "approve"}), 409)
    assert_error(api_client.post(f"/api/v1/runs/{queued.pk}/resume/", {"node": "x", "decision": "maybe"}), 400)
    assert api_client.delete(f"/api/v1/runs/{queued.pk}/").status_code == 204
    assert not Run.objects.filter(pk=queued.pk).exists()


def test_artifacts_get_download_delete(api_client, workflow, user):
    run = run_start(workflow=workflow, user=user, inputs={"text": "a"}, mode="sync")
    artifact = artifact_save(run=run, name="extra.json", content={"answer": 42})
    listed = api_client.get(f"/api/v1/runs/{run.pk}/artifacts/").json()
    assert "extra.json" in [a["name"] for a in listed["results"]]
    got = api_client.get(f"/api/v1/artifacts/{artifact.pk}/").json()
    assert got["size"] == artifact.size and got["download_url"].endswith(f"/api/v1/artifacts/{artifact.pk}/download/")
    body = b"".join(api_client.get(f"/api/v1/artifacts/{artifact.pk}/download/").streaming_content)
    assert b"42" in body
    assert api_client.delete(f"/api/v1/artifacts/{artifact.pk}/").status_code == 204
    assert_error(api_client.get(f"/api/v1/artifacts/{artifact.pk}/"), 404)
    assert AuditLog.objects.filter(action="artifact.deleted").exists()


def test_another_users_runs_and_artifacts_are_404(other_api_client, workflow, user):
    run = run_start(workflow=workflow, user=user, inputs={"text": "a"}, mode="sync")
    artifact = artifact_save(run=run, name="a.txt", content="secret stuff")
    for method, url in [
        ("get", f"/api/v1/runs/{run.pk}/"),
        ("delete", f"/api/v1/runs/{run.pk}/"),
        ("post", f"/api/v1/runs/{run.pk}/cancel/"),
        ("post", f"/api/v1/runs/{run.pk}/rerun/"),
        ("post", f"/api/v1/runs/{run.pk}/execute/"),
        ("get", f"/api/v1/runs/{run.pk}/events/"),
        ("get", f"/api/v1/runs/{run.pk}/artifacts/"),
        ("get", f"/api/v1/artifacts/{artifact.pk}/"),
        ("get", f"/api/v1/artifacts/{artifact.pk}/download/"),
        ("delete", f"/api/v1/artifacts/{artifact.pk}/"),
    ]:
        assert_error(getattr(other_api_client, method)(url), 404, "not_found")
    assert other_api_client.get("/api/v1/runs/").json()["count"] == 0
    assert Run.objects.filter(pk=run.pk).exists() and Artifact.objects.filter(pk=artifact.pk).exists()


def test_runner_may_start_and_cancel_but_not_delete(member_client, workflow, user):
    _runner, client = member_client(Role.RUNNER)
    response = start(client, workflow)
    assert response.status_code == 202
    run_id = response.json()["id"]
    assert client.post(f"/api/v1/runs/{run_id}/cancel/").status_code == 200
    assert_error(client.delete(f"/api/v1/runs/{run_id}/"), 403)
    _viewer, viewer = member_client(Role.VIEWER)
    assert viewer.get(f"/api/v1/runs/{run_id}/").status_code == 200
    assert_error(viewer.post(f"/api/v1/runs/{run_id}/rerun/"), 403)


def start_batch(client, workflow, items, **headers):
    return client.post(f"/api/v1/workflows/{workflow.pk}/runs/batch/", {"inputs": items}, format="json", **headers)


def test_batch_start_is_202_with_the_queued_runs_in_order(api_client, workflow):
    response = start_batch(api_client, workflow, [{"text": "a"}, {"text": "b"}, {"text": "c"}])
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["count"] == 3
    assert [run["inputs"] for run in body["runs"]] == [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    assert {run["status"] for run in body["runs"]} == {"queued"} and {run["trigger"] for run in body["runs"]} == {"api"}
    from runs import engine

    engine.execute_runs([run["id"] for run in body["runs"]])
    for run, text in zip(body["runs"], "abc", strict=True):
        detail = api_client.get(f"/api/v1/runs/{run['id']}/").json()
        assert detail["status"] == "succeeded"
        assert next(n for n in detail["node_runs"] if n["node_id"] == "second")["output"] == f"{text}!"


def test_batch_start_bad_items_are_400_by_index_and_start_nothing(api_client, workflow, settings):
    error = assert_error(start_batch(api_client, workflow, [{"text": "ok"}, {"text": 3}, {}]), 400, "invalid")
    assert set(error["fields"]) == {"inputs[1].text", "inputs[2].text"}, error
    assert_error(start_batch(api_client, workflow, []), 400)
    assert_error(start_batch(api_client, workflow, [{"text": "ok"}, "text"]), 400)
    assert_error(api_client.post(f"/api/v1/workflows/{workflow.pk}/runs/batch/", {}, format="json"), 400)
    settings.GW_BATCH_MAX_RUNS = 2
    error = assert_error(start_batch(api_client, workflow, [{"text": "x"}] * 3), 400)
    assert "At most 2" in str(error["fields"])
    assert Run.objects.count() == 0


def test_batch_start_idempotency_replays_the_same_runs_and_409s_another_body(api_client, workflow):
    items = [{"text": "a"}, {"text": "b"}]
    first = start_batch(api_client, workflow, items, HTTP_IDEMPOTENCY_KEY="nightly-7")
    assert first.status_code == 202
    again = start_batch(api_client, workflow, items, HTTP_IDEMPOTENCY_KEY="nightly-7")
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert [r["id"] for r in again.json()["runs"]] == [r["id"] for r in first.json()["runs"]]
    assert [r["idempotency_key"] for r in first.json()["runs"]] == ["nightly-7:0", "nightly-7:1"]
    assert_error(start_batch(api_client, workflow, [{"text": "z"}], HTTP_IDEMPOTENCY_KEY="nightly-7"), 409, "conflict")
    assert Run.objects.count() == 2


def test_batch_start_needs_the_run_permission(client_for, make_member, workflow):
    viewer = make_member(Role.VIEWER)
    assert_error(start_batch(client_for(viewer), workflow, [{"text": "a"}]), 403)
    assert Run.objects.count() == 0
