"""Workflow services: create/update, publish and versions, import/export, archive, node and edge edits."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.choices import Role
from accounts.models import AuditLog
from tests.workflows.conftest import doc, edge, node
from workflows.models import Edge, Node, Workflow
from workflows.services import (
    AUTO_PUBLISH_NOTE,
    normalize_definition,
    workflow_archive,
    workflow_create,
    workflow_current_version,
    workflow_definition,
    workflow_edge_add,
    workflow_edge_remove,
    workflow_export,
    workflow_import,
    workflow_is_dirty,
    workflow_node_add,
    workflow_node_remove,
    workflow_node_update,
    workflow_publish,
    workflow_restore,
    workflow_update,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def flow(workspace, user, linear_doc):
    return workflow_import(workspace=workspace, user=user, document=linear_doc)


def test_create_empty_then_definition(workspace, user):
    workflow = workflow_create(workspace=workspace, user=user, name="My flow", description="x", tags=["a"])
    assert workflow.slug == "my-flow"
    assert workflow_definition(workflow=workflow)["nodes"] == []
    assert AuditLog.objects.filter(action="workflow.created", target_id=str(workflow.pk)).exists()


def test_create_with_definition(workspace, user, linear_doc):
    workflow = workflow_create(workspace=workspace, user=user, name="Given name", definition=linear_doc)
    definition = workflow_definition(workflow=workflow)
    assert definition["name"] == "Given name"
    assert [n["id"] for n in definition["nodes"]] == ["a", "b", "c", "d", "e"]
    assert definition["settings"] == {"timeout": 60, "max_concurrent_runs": 2}


def test_create_rejects_bad_fields_with_field_messages(workspace, user):
    with pytest.raises(ValidationError) as info:
        workflow_create(workspace=workspace, user=user, name="   ")
    assert "name" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        workflow_create(workspace=workspace, user=user, name="x", tags="nope")
    assert "tags" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        workflow_create(workspace=workspace, user=user, name="x", colour="red")
    assert "colour" in info.value.message_dict
    assert not Workflow.objects.exists()


def test_create_rejects_draft_errors_per_node(workspace, user):
    bad = doc([node("a", config={"delay": "soon"}), node("b", "nope")], [edge("a", "zz")])
    with pytest.raises(ValidationError) as info:
        workflow_create(workspace=workspace, user=user, name="x", definition=bad)
    fields = info.value.message_dict
    assert "nodes.a.config.delay" in fields
    assert "nodes.b.type" in fields
    assert "edges" in fields
    assert not Workflow.objects.exists()


def test_slug_is_unique_and_explicit_duplicate_refused(workspace, user):
    first = workflow_create(workspace=workspace, user=user, name="Same")
    second = workflow_create(workspace=workspace, user=user, name="Same")
    assert (first.slug, second.slug) == ("same", "same-2")
    with pytest.raises(ValidationError) as info:
        workflow_create(workspace=workspace, user=user, name="Other", slug="same")
    assert "slug" in info.value.message_dict


def test_draft_may_be_incomplete_but_publish_refuses(workspace, user):
    # Two unconnected nodes: a fine draft, not publishable.
    workflow = workflow_create(workspace=workspace, user=user, name="x", definition=doc([node("a"), node("b")]))
    with pytest.raises(ValidationError) as info:
        workflow_publish(workflow=workflow, user=user)
    assert any("not connected" in m for messages in info.value.message_dict.values() for m in messages)
    assert not workflow.versions.exists()


def test_update_replaces_graph_atomically(flow, user):
    new = doc([node("x"), node("y")], [edge("x", "y")], name="Renamed")
    workflow_update(workflow=flow, user=user, definition=new)
    flow.refresh_from_db()
    assert flow.name == "Renamed"
    assert list(flow.nodes.values_list("node_id", flat=True)) == ["x", "y"]
    before = workflow_definition(workflow=flow)
    with pytest.raises(ValidationError):
        workflow_update(workflow=flow, user=user, definition=doc([node("p"), node("p")]), description="changed")
    flow.refresh_from_db()
    assert workflow_definition(workflow=flow) == before


def test_publish_snapshots_and_versions_are_immutable(flow, user):
    v1 = workflow_publish(workflow=flow, user=user, note="first")
    assert v1.number == 1
    assert v1.definition == workflow_definition(workflow=flow)
    assert workflow_publish(workflow=flow, user=user) == v1  # unchanged draft: no duplicate
    assert not workflow_is_dirty(workflow=flow)
    workflow_node_update(workflow=flow, user=user, node_id="a", config={"value": "changed"})
    assert workflow_is_dirty(workflow=flow)
    v2 = workflow_publish(workflow=flow, user=user)
    assert v2.number == 2
    v1.refresh_from_db()
    assert v1.definition["nodes"][0]["config"] == {"value": "{{ inputs.x }}"}  # the old snapshot kept
    v1.note = "edited"
    with pytest.raises(ValueError, match="never changed"):
        v1.save()
    assert AuditLog.objects.filter(action="workflow.published").count() == 2


def test_current_version_publishes_only_when_the_draft_changed(flow, user, make_member):
    runner = make_member(Role.RUNNER)
    v1 = workflow_current_version(workflow=flow, user=runner)
    assert v1.note == AUTO_PUBLISH_NOTE
    assert workflow_current_version(workflow=flow, user=runner) == v1
    workflow_node_update(workflow=flow, user=user, node_id="e", name="End")
    v2 = workflow_current_version(workflow=flow, user=runner)
    assert v2.number == 2
    with pytest.raises(PermissionDenied):
        workflow_current_version(workflow=flow, user=make_member(Role.VIEWER))


def test_export_import_round_trip(flow, workspace, user, linear_doc):
    exported = workflow_export(workflow=flow)
    assert exported == normalize_definition(linear_doc)
    text = json.dumps(exported)
    again = workflow_import(workspace=workspace, user=user, document=text)
    assert again.pk != flow.pk
    assert again.slug == "test-flow-2"
    assert workflow_export(workflow=again) == exported


def test_bad_import_saves_nothing(workspace, user):
    bad = doc([node("a"), node("b")], [edge("a", "b"), edge("b", "a")])  # a cycle, no start
    nodes, edges, workflows = Node.objects.count(), Edge.objects.count(), Workflow.objects.count()
    with pytest.raises(ValidationError) as info:
        workflow_import(workspace=workspace, user=user, document=bad)
    assert any("cycle" in m for m in info.value.messages)
    assert (Node.objects.count(), Edge.objects.count(), Workflow.objects.count()) == (nodes, edges, workflows)
    for document, field in [("{not json", "document"), ("[1]", "document"), ({"nodes": [node("a")]}, "name")]:
        with pytest.raises(ValidationError) as info:
            workflow_import(workspace=workspace, user=user, document=document)
        assert field in info.value.message_dict
    assert Workflow.objects.count() == workflows


def test_import_with_publish(workspace, user, linear_doc):
    workflow = workflow_import(workspace=workspace, user=user, document=linear_doc, publish=True)
    assert workflow.latest_version().number == 1


def test_archive_and_restore_keep_everything(flow, user):
    workflow_publish(workflow=flow, user=user)
    workflow_archive(workflow=flow, user=user)
    assert Workflow.objects.archived().filter(pk=flow.pk).exists()
    assert not Workflow.objects.active().filter(pk=flow.pk).exists()
    assert flow.versions.count() == 1 and flow.nodes.count() == 5
    with pytest.raises(ValidationError):
        workflow_update(workflow=flow, user=user, description="x")
    workflow_restore(workflow=flow, user=user)
    assert Workflow.objects.active().filter(pk=flow.pk).exists()
    assert {"workflow.archived", "workflow.restored"} <= set(AuditLog.objects.values_list("action", flat=True))


def test_writes_need_edit_permission(flow, workspace, make_member, other_user, linear_doc):
    for role in (Role.RUNNER, Role.VIEWER):
        member = make_member(role)
        with pytest.raises(PermissionDenied):
            workflow_create(workspace=workspace, user=member, name="x")
        with pytest.raises(PermissionDenied):
            workflow_publish(workflow=flow, user=member)
        with pytest.raises(PermissionDenied):
            workflow_archive(workflow=flow, user=member)
        with pytest.raises(PermissionDenied):
            workflow_node_remove(workflow=flow, user=member, node_id="a")
    with pytest.raises(PermissionDenied):
        workflow_import(workspace=workspace, user=other_user, document=linear_doc)
    editor = make_member(Role.EDITOR)
    assert workflow_publish(workflow=flow, user=editor).number == 1


def test_node_and_edge_edits(flow, user):
    workflow_node_add(workflow=flow, user=user, node={"id": "f", "type": "test_echo", "config": {"value": 1}})
    workflow_edge_add(workflow=flow, user=user, source="e", target="f")
    assert workflow_publish(workflow=flow, user=user).definition["edges"][-1] == {
        "source": "e",
        "target": "f",
        "branch": None,
    }
    with pytest.raises(ValidationError) as info:
        workflow_node_add(workflow=flow, user=user, node={"id": "f", "type": "test_echo"})
    assert "nodes.f.id" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        workflow_node_update(workflow=flow, user=user, node_id="f", config={"delay": "x"})
    assert "nodes.f.config.delay" in info.value.message_dict
    with pytest.raises(ValidationError):
        workflow_edge_add(workflow=flow, user=user, source="f", target="f")
    with pytest.raises(ValidationError):
        workflow_edge_add(workflow=flow, user=user, source="f", target="nowhere")
    with pytest.raises(ValidationError):
        workflow_edge_add(workflow=flow, user=user, source="e", target="f")  # duplicate
    workflow_node_update(workflow=flow, user=user, node_id="f", id="final")
    assert flow.edges.filter(target__node_id="final").exists()
    workflow_edge_remove(workflow=flow, user=user, source="e", target="final")
    with pytest.raises(ValidationError):
        workflow_edge_remove(workflow=flow, user=user, source="e", target="final")
    workflow_node_remove(workflow=flow, user=user, node_id="final")
    assert not flow.nodes.filter(node_id="final").exists()
    with pytest.raises(ValidationError):
        workflow_node_remove(workflow=flow, user=user, node_id="final")


def test_current_version_of_a_workflow_without_draft_rows(workspace, user, linear_doc):
    from workflows.models import WorkflowVersion

    workflow = Workflow.objects.create(workspace=workspace, name="Scripted", slug="scripted")
    with pytest.raises(ValidationError):
        workflow_current_version(workflow=workflow, user=user)  # nothing to run at all
    version = WorkflowVersion.objects.create(workflow=workflow, number=1, definition=linear_doc)
    assert workflow_current_version(workflow=workflow, user=user) == version
    assert not workflow_is_dirty(workflow=workflow)
