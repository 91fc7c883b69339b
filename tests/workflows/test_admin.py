"""The workflow admin as a staff user: pages, inline editing with validation, actions, import/export."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.urls import reverse

from accounts.models import User
from tests.workflows.conftest import doc, edge, node
from workflows.models import Trigger, Workflow, WorkflowVersion
from workflows.services import workflow_definition, workflow_export, workflow_import, workflow_publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return User.objects.create_superuser(username="admin", password="admin-pass-123", email="admin@example.com")


@pytest.fixture
def admin_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def flow(workspace, user, linear_doc):
    return workflow_import(workspace=workspace, user=user, document=linear_doc)


def _action(admin_client, action: str, *workflows: Workflow, follow: bool = True):
    return admin_client.post(
        reverse("admin:workflows_workflow_changelist"),
        {"action": action, "_selected_action": [w.pk for w in workflows]},
        follow=follow,
    )


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_pages_render(admin_client, flow, user):
    workflow_publish(workflow=flow, user=user)
    Trigger.objects.create(workflow=flow, kind="webhook")
    urls = [
        reverse("admin:workflows_workflow_changelist"),
        reverse("admin:workflows_workflow_changelist") + "?q=Test",
        reverse("admin:workflows_workflow_changelist") + "?archived=no&tag=test&is_active__exact=1",
        reverse("admin:workflows_workflow_changelist") + f"?workspace__id__exact={flow.workspace_id}",
        reverse("admin:workflows_workflow_add"),
        reverse("admin:workflows_workflow_change", args=[flow.pk]),
        reverse("admin:workflows_workflow_import"),
        reverse("admin:workflows_workflowversion_changelist"),
        reverse("admin:workflows_workflowversion_change", args=[flow.versions.get().pk]),
        reverse("admin:workflows_trigger_changelist"),
        reverse("admin:workflows_trigger_change", args=[flow.triggers.get().pk]),
        reverse("admin:workflows_trigger_add"),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
    listing = admin_client.get(reverse("admin:workflows_workflow_changelist") + "?tag=test")
    assert b"Test flow" in listing.content
    assert (
        b"Test flow" not in admin_client.get(reverse("admin:workflows_workflow_changelist") + "?archived=yes").content
    )


def test_versions_are_read_only(admin_client, flow, user):
    version = workflow_publish(workflow=flow, user=user)
    assert admin_client.get(reverse("admin:workflows_workflowversion_add")).status_code == 403
    admin_client.post(reverse("admin:workflows_workflowversion_change", args=[version.pk]), {"note": "changed"})
    admin_client.post(reverse("admin:workflows_workflowversion_delete", args=[version.pk]), {"post": "yes"})
    version.refresh_from_db()
    assert version.note == ""


def _change_data(workflow: Workflow, nodes: list[dict], edges: list[dict]) -> dict:
    data = {
        "name": workflow.name,
        "slug": workflow.slug,
        "description": workflow.description,
        "tags": json.dumps(workflow.tags),
        "is_active": "on",
        "inputs": json.dumps(workflow.inputs),
        "variables": json.dumps(workflow.variables),
        "timeout": "",
        "max_concurrent_runs": "",
        "nodes-TOTAL_FORMS": str(len(nodes)),
        "nodes-INITIAL_FORMS": str(sum(1 for n in nodes if n.get("pk"))),
        "nodes-MIN_NUM_FORMS": "0",
        "nodes-MAX_NUM_FORMS": "1000",
        "edges-TOTAL_FORMS": str(len(edges)),
        "edges-INITIAL_FORMS": str(sum(1 for e in edges if e.get("pk"))),
        "edges-MIN_NUM_FORMS": "0",
        "edges-MAX_NUM_FORMS": "1000",
    }
    for i, n in enumerate(nodes):
        data.update(
            {
                f"nodes-{i}-id": n.get("pk", ""),
                f"nodes-{i}-workflow": workflow.pk,
                f"nodes-{i}-node_id": n["node_id"],
                f"nodes-{i}-type": n["type"],
                f"nodes-{i}-name": n.get("name", ""),
                f"nodes-{i}-config": n.get("config", "{}"),
                f"nodes-{i}-retry": n.get("retry", "{}"),
                f"nodes-{i}-timeout": n.get("timeout", ""),
                f"nodes-{i}-on_error": n.get("on_error", "fail"),
                f"nodes-{i}-position": "{}",
            }
        )
        if n.get("DELETE"):
            data[f"nodes-{i}-DELETE"] = "on"
    for i, e in enumerate(edges):
        data.update(
            {
                f"edges-{i}-id": e.get("pk", ""),
                f"edges-{i}-workflow": workflow.pk,
                f"edges-{i}-source": e["source"],
                f"edges-{i}-target": e["target"],
                f"edges-{i}-branch": e.get("branch", ""),
            }
        )
    return data


@pytest.fixture
def small(workspace, user):
    return workflow_import(
        workspace=workspace, user=user, document=doc([node("a", config={"value": 1}), node("b")], [edge("a", "b")])
    )


def _rows(workflow):
    a, b = workflow.nodes.get(node_id="a"), workflow.nodes.get(node_id="b")
    return a, b, workflow.edges.get()


def test_inline_edit_saves_through_the_service(admin_client, small):
    a, b, e = _rows(small)
    nodes = [
        {"pk": a.pk, "node_id": "a", "type": "test_echo", "config": '{"value": "changed"}'},
        {"pk": b.pk, "node_id": "b", "type": "test_echo", "name": "Bee"},
        {"node_id": "c", "type": "test_branchy", "config": '{"cases": ["x"]}'},
    ]
    edges = [{"pk": e.pk, "source": a.pk, "target": b.pk}]
    response = admin_client.post(
        reverse("admin:workflows_workflow_change", args=[small.pk]), _change_data(small, nodes, edges)
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    definition = workflow_definition(workflow=small)
    assert [n["id"] for n in definition["nodes"]] == ["a", "b", "c"]
    assert definition["nodes"][0]["config"] == {"value": "changed"}
    assert definition["nodes"][1]["name"] == "Bee"
    assert definition["edges"] == [{"source": "a", "target": "b", "branch": None}]


def test_inline_config_errors_show_on_the_field(admin_client, small):
    a, b, e = _rows(small)
    before = workflow_definition(workflow=small)
    nodes = [
        {"pk": a.pk, "node_id": "a", "type": "test_echo", "config": '{"delay": "soon"}'},
        {
            "pk": b.pk,
            "node_id": "b",
            "type": "test_branchy",
            "config": '{"url": "ftp://x"}',
            "retry": '{"max_attempts": 0}',
        },
    ]
    response = admin_client.post(
        reverse("admin:workflows_workflow_change", args=[small.pk]),
        _change_data(small, nodes, [{"pk": e.pk, "source": a.pk, "target": a.pk}]),
    )
    assert response.status_code == 200
    forms = response.context["inline_admin_formsets"][0].formset.forms
    assert "delay" in str(forms[0].errors["config"])
    assert "must start with http" in str(forms[1].errors["config"])
    assert "max_attempts" in str(forms[1].errors["retry"])
    edge_forms = response.context["inline_admin_formsets"][1].formset.forms
    assert "itself" in str(edge_forms[0].errors)
    bad_json = _change_data(small, [{"pk": a.pk, "node_id": "a", "type": "test_echo", "config": "{nope"}], [])
    response = admin_client.post(reverse("admin:workflows_workflow_change", args=[small.pk]), bad_json)
    assert response.status_code == 200
    assert response.context["inline_admin_formsets"][0].formset.forms[0].errors["config"]
    assert workflow_definition(workflow=small) == before


def test_inline_delete_node_drops_its_edges(admin_client, small):
    a, b, e = _rows(small)
    nodes = [
        {"pk": a.pk, "node_id": "a", "type": "test_echo"},
        {"pk": b.pk, "node_id": "b", "type": "test_echo", "DELETE": True},
    ]
    response = admin_client.post(
        reverse("admin:workflows_workflow_change", args=[small.pk]),
        _change_data(small, nodes, [{"pk": e.pk, "source": a.pk, "target": b.pk}]),
    )
    assert response.status_code == 302
    assert workflow_definition(workflow=small)["edges"] == []
    assert list(small.nodes.values_list("node_id", flat=True)) == ["a"]


def test_add_workflow(admin_client, workspace):
    data = _change_data(Workflow(name="Fresh", slug="fresh"), [], [])
    data["workspace"] = workspace.pk
    response = admin_client.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 302
    assert Workflow.objects.get(slug="fresh").workspace == workspace


def test_validate_action(admin_client, flow, workspace, user):
    response = _action(admin_client, "validate_workflows", flow)
    assert any("valid" in m for m in _messages(response))
    broken = workflow_import(workspace=workspace, user=user, document=doc([node("x")]))
    from workflows.services import workflow_node_add

    workflow_node_add(workflow=broken, user=user, node={"id": "y", "type": "test_echo"})
    response = _action(admin_client, "validate_workflows", broken)
    assert any("not connected" in m for m in _messages(response))


def test_publish_action(admin_client, flow, workspace, user):
    response = _action(admin_client, "publish_workflows", flow)
    assert any("version 1" in m for m in _messages(response))
    assert flow.versions.count() == 1
    _action(admin_client, "publish_workflows", flow)
    assert flow.versions.count() == 1  # unchanged draft
    broken = workflow_import(workspace=workspace, user=user, document=doc([node("x")]))
    from workflows.services import workflow_node_add

    workflow_node_add(workflow=broken, user=user, node={"id": "y", "type": "test_echo"})
    response = _action(admin_client, "publish_workflows", broken)
    assert any("not published" in m for m in _messages(response))
    assert not broken.versions.exists()


def test_export_action_and_link(admin_client, flow, workspace, user):
    response = _action(admin_client, "export_workflows", flow, follow=False)
    assert response["Content-Type"] == "application/json"
    assert "attachment" in response["Content-Disposition"]
    assert json.loads(response.content) == workflow_export(workflow=flow)
    link = admin_client.get(reverse("admin:workflows_workflow_export", args=[flow.pk]))
    assert json.loads(link.content) == workflow_export(workflow=flow)
    other = workflow_import(workspace=workspace, user=user, document=doc([node("x")], name="Other"))
    response = _action(admin_client, "export_workflows", flow, other, follow=False)
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(names) == sorted([f"{workspace.slug}/{flow.slug}.json", f"{workspace.slug}/other.json"])


def test_archive_restore_and_delete(admin_client, flow):
    _action(admin_client, "archive_workflows", flow)
    flow.refresh_from_db()
    assert flow.is_archived
    _action(admin_client, "restore_workflows", flow)
    flow.refresh_from_db()
    assert not flow.is_archived
    admin_client.post(reverse("admin:workflows_workflow_delete", args=[flow.pk]), {"post": "yes"})
    flow.refresh_from_db()  # still there
    assert flow.is_archived


def test_import_page(admin_client, workspace, linear_doc):
    url = reverse("admin:workflows_workflow_import")
    response = admin_client.post(url, {"workspace": workspace.pk, "text": json.dumps(linear_doc), "publish": "on"})
    assert response.status_code == 302
    imported = Workflow.objects.get(name="Test flow")
    assert imported.versions.count() == 1
    upload = io.BytesIO(json.dumps(linear_doc).encode())
    upload.name = "flow.json"
    response = admin_client.post(url, {"workspace": workspace.pk, "file": upload, "name": "Uploaded"})
    assert response.status_code == 302
    assert Workflow.objects.filter(name="Uploaded").exists()


def test_bad_import_page_saves_nothing(admin_client, workspace):
    url = reverse("admin:workflows_workflow_import")
    count = Workflow.objects.count()
    bad = doc([node("a"), node("a", "nope")], [edge("a", "ghost")])
    response = admin_client.post(url, {"workspace": workspace.pk, "text": json.dumps(bad)})
    assert response.status_code == 400
    problems = response.context["problems"]
    assert any("more than once" in p for p in problems) and any("ghost" in p for p in problems)
    assert admin_client.post(url, {"workspace": workspace.pk, "text": "{oops"}).status_code == 400
    assert admin_client.post(url, {"workspace": workspace.pk}).status_code == 200  # neither file nor text
    assert Workflow.objects.count() == count


def test_trigger_admin_goes_through_the_trigger_services(admin_client, flow):
    response = admin_client.post(
        reverse("admin:workflows_trigger_add"),
        {"workflow": flow.pk, "kind": "schedule", "cron": "*/5 * * * *", "inputs": '{"x": "tick"}', "is_active": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    trigger = Trigger.objects.get(workflow=flow)
    assert trigger.schedule_id is not None  # the service made the django-q2 schedule
    bad = admin_client.post(
        reverse("admin:workflows_trigger_change", args=[trigger.pk]),
        {"cron": "not a cron", "inputs": "{}", "is_active": "on"},
        follow=True,
    )
    assert any("Not saved" in str(m) for m in bad.context["messages"])
    trigger.refresh_from_db()
    assert trigger.cron == "*/5 * * * *"
    admin_client.post(
        reverse("admin:workflows_trigger_changelist"), {"action": "deactivate", "_selected_action": [trigger.pk]}
    )
    trigger.refresh_from_db()
    assert not trigger.is_active
    page = admin_client.get(reverse("admin:workflows_trigger_change", args=[trigger.pk]))
    assert trigger.token.encode() not in page.content
    admin_client.post(reverse("admin:workflows_trigger_delete", args=[trigger.pk]), {"post": "yes"})
    assert not Trigger.objects.filter(pk=trigger.pk).exists()


def test_non_staff_cannot_use_the_admin(client, user, flow):
    client.force_login(user)
    response = client.get(reverse("admin:workflows_workflow_changelist"))
    assert response.status_code == 302
    assert WorkflowVersion.objects.count() == 0
