"""The dashboard, the workflow library, the gallery and the editor, driven through the real views."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.choices import Role
from workflows.models import Workflow
from workflows.services import workflow_definition

pytestmark = pytest.mark.django_db


def test_pages_need_sign_in(client):
    for name in ("dashboard", "workflow_list", "run_list", "credential_list", "collection_list"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert reverse("accounts:login") in response["Location"]


def test_dashboard_empty_state(client_in):
    response = client_in.get("/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "No runs yet — run the demo workflow" in body
    assert "No workflows yet" in body


@pytest.mark.django_db(transaction=True)
def test_dashboard_lists_runs_workflows_and_chart(client_in, workflow, finished_run):
    body = client_in.get(reverse("dashboard")).content.decode()
    assert f"#{finished_run.pk}" in body
    assert "Greeter" in body
    assert 'class="chart"' in body
    assert "Succeeded <strong>1</strong>" in body


def test_dashboard_suggests_the_offline_rag_demo_first(client_in, workflow, workspace, user):
    from workflows.services import workflow_create

    rag = workflow_create(workspace=workspace, user=user, name="Answer from the guide", tags=["demo", "rag"])
    workflow.save()  # the other workflow is now the most recently updated
    body = client_in.get(reverse("dashboard")).content.decode()
    assert "No runs yet" in body
    assert f'href="{reverse("workflow_run", args=[rag.pk])}">▶ Run “Answer from the guide”' in body


def test_library_search_tag_and_active_filters(client_in, workflow, workspace, user):
    from workflows.services import workflow_create

    workflow_create(workspace=workspace, user=user, name="Other thing", tags=["misc"], is_active=False)
    body = client_in.get(reverse("workflow_list")).content.decode()
    assert "Greeter" in body and "Other thing" in body
    assert "Greeter" not in client_in.get(reverse("workflow_list"), {"q": "other"}).content.decode()
    body = client_in.get(reverse("workflow_list"), {"tag": "web"}).content.decode()
    assert "Greeter" in body and "Other thing" not in body
    body = client_in.get(reverse("workflow_list"), {"active": "0"}).content.decode()
    assert "Other thing" in body and "Greeter" not in body
    assert "No workflows match" in client_in.get(reverse("workflow_list"), {"q": "zzz"}).content.decode()


def test_library_paginates(client_in, workspace, user):
    from workflows.services import workflow_create

    for i in range(14):
        workflow_create(workspace=workspace, user=user, name=f"Flow {i:02d}")
    first = client_in.get(reverse("workflow_list")).content.decode()
    second = client_in.get(reverse("workflow_list"), {"page": 2}).content.decode()
    assert "Page 1 of 2" in first and "Flow 00" in first and "Flow 13" not in first
    assert "Flow 13" in second


def test_create_workflow_then_add_and_connect_nodes(client_in, workspace):
    response = client_in.post(reverse("workflow_create"), {"name": "Built here", "tags": "a, b"})
    workflow = Workflow.objects.get(name="Built here")
    assert response.status_code == 302 and response["Location"] == reverse("workflow_detail", args=[workflow.pk])
    assert workflow.tags == ["a", "b"]

    response = client_in.post(
        reverse("workflow_node_add", args=[workflow.pk]), {"type": "template", "node_id": "first"}
    )
    assert response.status_code == 302
    form_url = response["Location"]
    assert form_url.endswith("/nodes/first/?type=template")
    page = client_in.get(form_url)
    assert page.status_code == 200
    assert 'name="cfg_template"' in page.content.decode()
    assert (
        client_in.post(
            form_url, {"type": "template", "cfg_template": "Hi {{ inputs.x }}", "on_error": "fail"}
        ).status_code
        == 302
    )
    client_in.post(
        reverse("workflow_node", args=[workflow.pk, "second"]) + "?type=template",
        {"type": "template", "cfg_template": '{"said": "{{ nodes.first.output }}"}', "on_error": "fail"},
    )
    response = client_in.post(reverse("workflow_edge_add", args=[workflow.pk]), {"source": "first", "target": "second"})
    assert response.status_code == 302

    definition = workflow_definition(workflow=workflow)
    assert [n["id"] for n in definition["nodes"]] == ["first", "second"]
    assert definition["nodes"][1]["config"]["template"] == {"said": "{{ nodes.first.output }}"}
    assert definition["edges"] == [{"source": "first", "target": "second", "branch": None}]

    body = client_in.get(reverse("workflow_detail", args=[workflow.pk])).content.decode()
    assert 'data-node="first"' in body and 'data-node="second"' in body
    assert 'data-source="first" data-target="second"' in body


def test_node_form_shows_field_errors(client_in, workflow):
    url = reverse("workflow_node", args=[workflow.pk, "greet"])
    response = client_in.post(url, {"type": "template", "cfg_template": "{{ broken", "on_error": "fail"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "field-error" in body and "syntax" in body.lower()
    assert workflow_definition(workflow=workflow)["nodes"][0]["config"]["template"] == "Hello {{ inputs.topic }}"


def test_remove_edge_and_node(client_in, workflow):
    client_in.post(reverse("workflow_edge_delete", args=[workflow.pk]), {"source": "greet", "target": "shout"})
    assert workflow_definition(workflow=workflow)["edges"] == []
    client_in.post(reverse("workflow_node_delete", args=[workflow.pk, "shout"]))
    assert [n["id"] for n in workflow_definition(workflow=workflow)["nodes"]] == ["greet"]


def test_validation_errors_are_shown_on_nodes(client_in, workflow, user):
    from workflows.services import workflow_node_add

    workflow_node_add(
        workflow=workflow, user=user, node={"id": "lonely", "type": "template", "config": {"template": "x"}}
    )
    response = client_in.post(reverse("workflow_validate", args=[workflow.pk]), follow=True)
    body = response.content.decode()
    assert "problem" in body
    assert 'class="node cat-control has-error" data-node="lonely"' in body
    assert 'id="validation-errors"' in body


def test_publish_and_diff_versions(client_in, workflow, user):
    from workflows.services import workflow_node_update

    response = client_in.post(reverse("workflow_publish", args=[workflow.pk]), {"note": "first"}, follow=True)
    assert "Published version 1" in response.content.decode()
    workflow_node_update(workflow=workflow, user=user, node_id="shout", config={"template": "changed"})
    client_in.post(reverse("workflow_publish", args=[workflow.pk]), {"note": "second"})
    body = client_in.get(reverse("workflow_versions", args=[workflow.pk]), {"a": 1, "b": 2}).content.decode()
    assert "Node changed: <code>shout</code>" in body
    assert "diff-add" in body and "changed" in body


def test_import_export_duplicate_and_delete(client_in, workflow):
    exported = client_in.get(reverse("workflow_export", args=[workflow.pk]))
    assert exported["Content-Type"] == "application/json"
    document = json.loads(exported.content)
    assert document["format"] == "graphwright/v1"
    document["name"] = "Imported copy"
    upload = SimpleUploadedFile("flow.json", json.dumps(document).encode(), content_type="application/json")
    response = client_in.post(reverse("workflow_import"), {"file": upload})
    imported = Workflow.objects.get(name="Imported copy")
    assert response["Location"] == reverse("workflow_detail", args=[imported.pk])

    bad = SimpleUploadedFile("bad.json", b"{not json", content_type="application/json")
    response = client_in.post(reverse("workflow_import"), {"file": bad})
    assert response.status_code == 400 and "not valid JSON" in response.content.decode()

    client_in.post(reverse("workflow_duplicate", args=[workflow.pk]))
    assert Workflow.objects.filter(name="Copy of Greeter").exists()

    assert "Yes, delete it" in client_in.get(reverse("workflow_delete", args=[workflow.pk])).content.decode()
    client_in.post(reverse("workflow_delete", args=[workflow.pk]))
    workflow.refresh_from_db()
    assert workflow.archived_at is not None
    assert client_in.get(reverse("workflow_detail", args=[workflow.pk])).status_code == 404


def test_toggle_active(client_in, workflow):
    client_in.post(reverse("workflow_toggle", args=[workflow.pk]))
    workflow.refresh_from_db()
    assert workflow.is_active is False


def test_settings_edit_inputs(client_in, workflow):
    url = reverse("workflow_settings", args=[workflow.pk])
    response = client_in.post(url, {"name": "Greeter 2", "tags": "x", "inputs": "[1]"})
    assert response.status_code == 400
    client_in.post(
        url, {"name": "Greeter 2", "tags": "x", "inputs": '{"topic": {"type": "string"}, "n": {"type": "integer"}}'}
    )
    workflow.refresh_from_db()
    assert workflow.name == "Greeter 2" and set(workflow.inputs) == {"topic", "n"}


def test_run_form_from_declared_inputs_starts_a_run(client_in, workflow):
    page = client_in.get(reverse("workflow_run", args=[workflow.pk])).content.decode()
    assert 'name="topic"' in page and "required" in page
    response = client_in.post(reverse("workflow_run", args=[workflow.pk]), {})
    assert response.status_code == 400
    response = client_in.post(reverse("workflow_run", args=[workflow.pk]), {"topic": "web"})
    assert response.status_code == 302
    run = workflow.runs.get()
    assert response["Location"] == reverse("run_detail", args=[run.pk])
    assert run.inputs == {"topic": "web"}


def test_batch_run_page_starts_one_run_per_object(client_in, workflow):
    url = reverse("workflow_run_batch", args=[workflow.pk])
    assert url in client_in.get(reverse("workflow_run", args=[workflow.pk])).content.decode()
    page = client_in.get(url).content.decode()
    assert 'name="items"' in page and 'name="file"' in page
    response = client_in.post(url, {"items": '{"topic": "a"}\n\n{"topic": "b"}\n'})
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('run_list')}?workflow={workflow.pk}"
    assert sorted(run.inputs["topic"] for run in workflow.runs.all()) == ["a", "b"]
    assert {run.status for run in workflow.runs.all()} == {"queued"}
    upload = SimpleUploadedFile("rows.json", b'[{"topic": "c"}]', content_type="application/json")
    assert client_in.post(url, {"file": upload}).status_code == 302
    assert workflow.runs.count() == 3


def test_batch_run_page_shows_what_is_wrong_and_starts_nothing(client_in, workflow):
    url = reverse("workflow_run_batch", args=[workflow.pk])
    cases = {
        "": "Give at least one input object.",
        '[{"topic": "a"}': "Not a valid JSON array",
        '{"topic": "a"}\n{"topic": ': "Line 2 is not valid JSON",
        '[{"topic": "a"}, {"topic": 5}]': "inputs[1].topic: Expected string, got int.",
        '[{"topic": "a"}, "b"]': "inputs[1]: Inputs must be a JSON object.",
    }
    for items, message in cases.items():
        response = client_in.post(url, {"items": items})
        assert response.status_code == 400, items
        assert message in response.content.decode(), (items, response.content.decode())
    assert not workflow.runs.exists()


def test_gallery_lists_demo_templates_and_uses_one(client_in):
    from workflows.views import gallery_templates

    templates = gallery_templates()
    body = client_in.get(reverse("workflow_gallery")).content.decode()
    if not templates:
        assert "No templates are installed" in body
        return
    assert templates[0]["name"] in body
    response = client_in.post(reverse("workflow_gallery_use", args=[templates[0]["slug"]]))
    assert response.status_code == 302
    assert Workflow.objects.filter(name=templates[0]["name"]).exists()


def test_other_users_workflow_is_404(other_client, workflow):
    for name in ("workflow_detail", "workflow_versions", "workflow_export", "workflow_run", "workflow_settings"):
        assert other_client.get(reverse(name, args=[workflow.pk])).status_code == 404
    assert other_client.get(reverse("workflow_node", args=[workflow.pk, "greet"])).status_code == 404
    for name in ("workflow_publish", "workflow_duplicate", "workflow_delete", "workflow_toggle"):
        assert other_client.post(reverse(name, args=[workflow.pk])).status_code == 404
    assert "Greeter" not in other_client.get(reverse("workflow_list")).content.decode()


def test_viewer_may_look_but_not_edit(client, workflow, make_member):
    viewer = make_member(Role.VIEWER)
    client.force_login(viewer)
    body = client.get(reverse("workflow_detail", args=[workflow.pk])).content.decode()
    assert "Add a node" not in body
    assert client.post(reverse("workflow_node_delete", args=[workflow.pk, "greet"])).status_code == 403
    assert client.post(reverse("workflow_run", args=[workflow.pk]), {"topic": "x"}).status_code == 403
    batch = reverse("workflow_run_batch", args=[workflow.pk])
    assert client.post(batch, {"items": '[{"topic": "x"}]'}).status_code == 403
    assert not workflow.runs.exists()
    assert len(workflow_definition(workflow=workflow)["nodes"]) == 2


def test_friendly_error_pages(client_in, rf, user):
    from config.views import server_error

    response = client_in.get("/no/such/page/")
    assert response.status_code == 404 and "We could not find that page" in response.content.decode()
    request = rf.get("/")
    request.user = user
    response = server_error(request)
    assert response.status_code == 500 and "Something went wrong on our side" in response.content.decode()


def test_toggle_refuses_an_outside_redirect(client_in, workflow):
    response = client_in.post(reverse("workflow_toggle", args=[workflow.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("workflow_detail", args=[workflow.pk])
    response = client_in.post(reverse("workflow_toggle", args=[workflow.pk]), {"next": "/workflows/?q=x"})
    assert response["Location"] == "/workflows/?q=x"
