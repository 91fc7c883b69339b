"""The runs list, the run page and its controls (cancel, rerun, approve/reject), artifacts."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from accounts.choices import Role
from runs import services as run_services
from runs.choices import NodeRunStatus, RunStatus
from runs.models import Run
from workflows import services as workflow_services

pytestmark = pytest.mark.django_db(transaction=True)

APPROVAL = {
    "format": "graphwright/v1",
    "name": "Needs a yes",
    "nodes": [
        {"id": "ask", "type": "approval", "config": {"message": "Ship it?"}},
        {"id": "yes", "type": "template", "config": {"template": "shipped"}},
        {"id": "no", "type": "template", "config": {"template": "held"}},
    ],
    "edges": [
        {"source": "ask", "target": "yes", "branch": "approved"},
        {"source": "ask", "target": "no", "branch": "rejected"},
    ],
}


@pytest.fixture
def approval_run(workspace, user):
    workflow = workflow_services.workflow_create(
        workspace=workspace, user=user, name="Needs a yes", definition=APPROVAL
    )
    run = run_services.run_start(workflow=workflow, user=user, inputs={}, mode="sync")
    assert run.status == RunStatus.WAITING
    return run


def test_run_page_renders_stored_state(client_in, finished_run):
    response = client_in.get(reverse("run_detail", args=[finished_run.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "HELLO WORLD" in body  # the output of the last node
    assert 'data-node="greet"' in body and "st-succeeded" in body
    assert 'id="run-config"' in body and f"/ws/runs/{finished_run.pk}/" in body
    last_seq = finished_run.events.order_by("-seq").first().seq
    assert f'"lastSeq": {last_seq}' in body
    assert "run.succeeded" in body  # the timeline
    assert "2 / 2 nodes" in body.replace('<span id="progress-done">2</span>', "2")


def test_events_json_resumes_after_seq(client_in, finished_run):
    url = reverse("run_events", args=[finished_run.pk])
    all_events = client_in.get(url).json()
    assert all_events["finished"] is True
    seqs = [e["seq"] for e in all_events["events"]]
    assert seqs == sorted(seqs) and seqs[0] == 1
    later = client_in.get(url, {"after": seqs[2]}).json()["events"]
    assert [e["seq"] for e in later] == seqs[3:]


def test_node_panel_fragment(client_in, finished_run):
    body = client_in.get(reverse("run_node", args=[finished_run.pk, "shout"])).content.decode()
    assert 'id="panel-shout"' in body and "HELLO WORLD" in body
    assert client_in.get(reverse("run_node", args=[finished_run.pk, "nope"])).status_code == 404


def test_artifacts_view_and_download(client_in, finished_run):
    artifact = run_services.artifact_save(run=finished_run, name="notes.json", content={"a": 1})
    body = client_in.get(reverse("run_detail", args=[finished_run.pk])).content.decode()
    assert "notes.json" in body
    view = client_in.get(reverse("artifact_view", args=[artifact.pk]))
    assert view.status_code == 200 and "&quot;a&quot;: 1" in view.content.decode()
    download = client_in.get(reverse("artifact_download", args=[artifact.pk]))
    assert download["Content-Disposition"].startswith("attachment")
    assert json.loads(b"".join(download.streaming_content)) == {"a": 1}


def test_runs_list_filters(client_in, finished_run, workflow, user):
    queued = run_services.run_start(workflow=workflow, user=user, inputs={"topic": "later"})
    body = client_in.get(reverse("run_list")).content.decode()
    assert f"#{finished_run.pk}" in body and f"#{queued.pk}" in body
    body = client_in.get(reverse("run_list"), {"status": "succeeded"}).content.decode()
    assert f"#{finished_run.pk}" in body and f"#{queued.pk}" not in body
    body = client_in.get(reverse("run_list"), {"workflow": workflow.pk, "trigger": "manual"}).content.decode()
    assert f"#{finished_run.pk}" in body
    assert "No runs match" in client_in.get(reverse("run_list"), {"trigger": "webhook"}).content.decode()


def test_runs_list_empty_state(client_in):
    assert "No runs yet — run the demo workflow" in client_in.get(reverse("run_list")).content.decode()


def test_cancel_a_queued_run(client_in, workflow, user):
    run = run_services.run_start(workflow=workflow, user=user, inputs={"topic": "x"})
    assert "Cancel run" in client_in.get(reverse("run_detail", args=[run.pk])).content.decode()
    client_in.post(reverse("run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_rerun_from_a_node(client_in, finished_run):
    response = client_in.post(reverse("run_rerun", args=[finished_run.pk]), {"from_node": "shout"})
    new = Run.objects.exclude(pk=finished_run.pk).get()
    assert response["Location"] == reverse("run_detail", args=[new.pk])
    assert new.rerun_of_id == finished_run.pk and new.rerun_from == "shout"
    assert new.node_runs.get(node_id="greet").reused_from_id is not None
    response = client_in.post(reverse("run_rerun", args=[finished_run.pk]), {"from_node": "ghost"}, follow=True)
    assert "There is no node" in response.content.decode()


def test_approve_a_waiting_run(client_in, approval_run):
    body = client_in.get(reverse("run_detail", args=[approval_run.pk])).content.decode()
    assert "Waiting for approval" in body and 'value="approve"' in body
    client_in.post(reverse("run_resume", args=[approval_run.pk]), {"node": "ask", "decision": "approve"})
    node_run = approval_run.node_runs.get(node_id="ask")
    assert node_run.status == NodeRunStatus.SUCCEEDED and node_run.branch == "approved"


def test_reject_needs_a_valid_decision(client_in, approval_run):
    response = client_in.post(
        reverse("run_resume", args=[approval_run.pk]), {"node": "ask", "decision": "maybe"}, follow=True
    )
    assert "Choose approve or reject" in response.content.decode()
    client_in.post(reverse("run_resume", args=[approval_run.pk]), {"node": "ask", "decision": "reject"})
    assert approval_run.node_runs.get(node_id="ask").branch == "rejected"


def test_other_users_run_is_404(other_client, finished_run):
    artifact = run_services.artifact_save(run=finished_run, name="x.txt", content="secret-ish")
    for name in ("run_detail", "run_events"):
        assert other_client.get(reverse(name, args=[finished_run.pk])).status_code == 404
    assert other_client.get(reverse("run_node", args=[finished_run.pk, "greet"])).status_code == 404
    for name in ("run_cancel", "run_rerun", "run_resume"):
        assert other_client.post(reverse(name, args=[finished_run.pk])).status_code == 404
    for name in ("artifact_view", "artifact_download"):
        assert other_client.get(reverse(name, args=[artifact.pk])).status_code == 404
    assert f"#{finished_run.pk}" not in other_client.get(reverse("run_list")).content.decode()


def test_viewer_sees_the_run_but_has_no_controls(client, finished_run, make_member):
    client.force_login(make_member(Role.VIEWER))
    body = client.get(reverse("run_detail", args=[finished_run.pk])).content.decode()
    assert "HELLO WORLD" in body and "Rerun" not in body
    assert client.post(reverse("run_rerun", args=[finished_run.pk]), {"from_node": "greet"}).status_code == 403
