"""Workflow API: CRUD with the definition, filters, pagination, nodes/edges, publish, import/export, access."""

from __future__ import annotations

import pytest

from accounts.choices import Role
from accounts.models import AuditLog
from workflows.models import Workflow

from .conftest import assert_error, echo_definition

pytestmark = pytest.mark.django_db


def test_create_with_definition_and_read_it_back(api_client, workspace):
    response = api_client.post("/api/v1/workflows/", {"definition": echo_definition("Greeter", ["a"])}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "Greeter"
    assert body["workspace"] == workspace.pk
    assert body["definition"]["format"] == "graphwright/v1"
    assert [n["id"] for n in body["definition"]["nodes"]] == ["first", "second"]
    detail = api_client.get(f"/api/v1/workflows/{body['id']}/").json()
    assert detail["definition"]["edges"] == [{"source": "first", "target": "second", "branch": None}]
    assert AuditLog.objects.filter(action="workflow.created", target_id=str(body["id"])).exists()


def test_create_requires_a_name_and_reports_fields(api_client):
    error = assert_error(api_client.post("/api/v1/workflows/", {"description": "x"}, format="json"), 400, "invalid")
    assert "name" in error["fields"]


def test_create_with_bad_graph_is_400_with_field_messages(api_client):
    definition = echo_definition("Bad")
    definition["nodes"][0]["type"] = "no_such_type"
    error = assert_error(api_client.post("/api/v1/workflows/", {"definition": definition}, format="json"), 400)
    assert error["fields"], error
    assert Workflow.objects.count() == 0


def test_update_put_and_patch(api_client, workflow):
    url = f"/api/v1/workflows/{workflow.pk}/"
    response = api_client.patch(url, {"description": "new words", "is_active": False}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["description"] == "new words"
    definition = echo_definition("Echo")
    definition["nodes"].append({"id": "third", "type": "api_echo", "config": {"value": 3}})
    response = api_client.put(url, {"name": "Renamed", "definition": definition}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "Renamed"
    assert len(response.json()["definition"]["nodes"]) == 3


def test_delete_archives(api_client, workflow):
    assert api_client.delete(f"/api/v1/workflows/{workflow.pk}/").status_code == 204
    workflow.refresh_from_db()
    assert workflow.archived_at is not None
    assert api_client.get("/api/v1/workflows/").json()["count"] == 0
    assert api_client.get("/api/v1/workflows/?archived=true").json()["count"] == 1


def test_filters_and_pagination(api_client, make_workflow):
    make_workflow("Alpha report", tags=["reports"])
    make_workflow("Beta digest", tags=["digest"])
    off = make_workflow("Gamma report", tags=["reports", "x"])
    off.is_active = False
    off.save()
    names = lambda r: sorted(w["name"] for w in r.json()["results"])  # noqa: E731
    assert names(api_client.get("/api/v1/workflows/?search=report")) == ["Alpha report", "Gamma report"]
    assert names(api_client.get("/api/v1/workflows/?tag=reports")) == ["Alpha report", "Gamma report"]
    assert names(api_client.get("/api/v1/workflows/?tag=digest")) == ["Beta digest"]
    assert names(api_client.get("/api/v1/workflows/?is_active=false")) == ["Gamma report"]
    assert names(api_client.get("/api/v1/workflows/?is_active=true&tag=reports")) == ["Alpha report"]
    assert_error(api_client.get("/api/v1/workflows/?is_active=maybe"), 400)
    page = api_client.get("/api/v1/workflows/?limit=2&offset=0").json()
    assert page["count"] == 3 and len(page["results"]) == 2
    assert page["next"] and page["previous"] is None
    page2 = api_client.get("/api/v1/workflows/?limit=2&offset=2").json()
    assert len(page2["results"]) == 1 and page2["previous"]


def test_nodes_and_edges_one_at_a_time(api_client, workflow):
    base = f"/api/v1/workflows/{workflow.pk}"
    assert [n["id"] for n in api_client.get(f"{base}/nodes/").json()["results"]] == ["first", "second"]
    response = api_client.post(
        f"{base}/nodes/", {"id": "third", "type": "api_echo", "config": {"value": 1}}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert api_client.get(f"{base}/nodes/third/").json()["config"] == {"value": 1}
    response = api_client.patch(f"{base}/nodes/third/", {"config": {"value": 2}}, format="json")
    assert response.status_code == 200 and response.json()["config"] == {"value": 2}
    assert_error(api_client.post(f"{base}/nodes/", {"id": "bad", "type": "nope"}, format="json"), 400)

    response = api_client.post(f"{base}/edges/", {"source": "second", "target": "third"}, format="json")
    assert response.status_code == 201, response.json()
    edge_id = response.json()["id"]
    assert_error(api_client.post(f"{base}/edges/", {"source": "second", "target": "ghost"}, format="json"), 400)
    response = api_client.patch(f"{base}/edges/{edge_id}/", {"source": "first"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["source"] == "first"
    edges = api_client.get(f"{base}/edges/").json()["results"]
    assert {(e["source"], e["target"]) for e in edges} == {("first", "second"), ("first", "third")}
    new_id = response.json()["id"]
    assert api_client.delete(f"{base}/edges/{new_id}/").status_code == 204
    assert api_client.delete(f"{base}/nodes/third/").status_code == 204
    assert api_client.get(f"{base}/nodes/third/").status_code == 404
    definition = api_client.get(f"{base}/").json()["definition"]
    assert [n["id"] for n in definition["nodes"]] == ["first", "second"]


def test_validate_publish_versions(api_client, workflow):
    base = f"/api/v1/workflows/{workflow.pk}"
    assert api_client.post(f"{base}/validate/").json() == {"valid": True, "errors": []}
    response = api_client.post(f"{base}/publish/", {"note": "first"}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["number"] == 1
    versions = api_client.get(f"{base}/versions/").json()
    assert versions["count"] == 1 and versions["results"][0]["note"] == "first"
    assert versions["results"][0]["definition"]["nodes"]
    assert api_client.get(f"{base}/").json()["current_version"] == 1
    # A cycle is a publish-time error: validate reports it, publish refuses it.
    api_client.post(f"{base}/edges/", {"source": "second", "target": "first"}, format="json")
    result = api_client.post(f"{base}/validate/").json()
    assert result["valid"] is False and result["errors"]
    assert_error(api_client.post(f"{base}/publish/", {}, format="json"), 400)


def test_export_then_import(api_client, workflow):
    document = api_client.get(f"/api/v1/workflows/{workflow.pk}/export/").json()
    assert document["format"] == "graphwright/v1"
    response = api_client.post("/api/v1/workflows/import/", {"document": document}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["id"] != workflow.pk
    assert [n["id"] for n in response.json()["definition"]["nodes"]] == ["first", "second"]
    bare = api_client.post("/api/v1/workflows/import/", document, format="json")
    assert bare.status_code == 201, bare.json()
    assert_error(api_client.post("/api/v1/workflows/import/", {"document": {"format": "nope"}}, format="json"), 400)


def test_another_users_workflow_is_404(other_api_client, workflow):
    base = f"/api/v1/workflows/{workflow.pk}"
    for method, url in [
        ("get", f"{base}/"),
        ("patch", f"{base}/"),
        ("delete", f"{base}/"),
        ("post", f"{base}/publish/"),
        ("get", f"{base}/export/"),
        ("get", f"{base}/nodes/"),
        ("get", f"{base}/nodes/first/"),
        ("get", f"{base}/edges/"),
        ("post", f"{base}/runs/"),
        ("get", f"{base}/triggers/"),
    ]:
        assert_error(getattr(other_api_client, method)(url, {}, format="json"), 404, "not_found")
    assert other_api_client.get("/api/v1/workflows/").json()["count"] == 0
    workflow.refresh_from_db()
    assert workflow.archived_at is None


def test_viewer_reads_but_may_not_change(member_client, workflow):
    _viewer, client = member_client(Role.VIEWER)
    base = f"/api/v1/workflows/{workflow.pk}"
    assert client.get(f"{base}/").status_code == 200
    assert_error(client.patch(f"{base}/", {"description": "x"}, format="json"), 403, "permission_denied")
    assert_error(client.delete(f"{base}/"), 403)
    assert_error(client.post(f"{base}/nodes/", {"id": "n", "type": "api_echo"}, format="json"), 403)
    assert_error(client.post(f"{base}/publish/", {}, format="json"), 403)
    assert_error(client.post(f"{base}/runs/", {"inputs": {"text": "hi"}}, format="json"), 403)
    _editor, editor = member_client(Role.EDITOR)
    assert editor.patch(f"{base}/", {"description": "x"}, format="json").status_code == 200


def test_anonymous_is_401_json(client, workflow):
    error = assert_error(client.get("/api/v1/workflows/"), 401)
    assert error["code"] == "not_authenticated"
