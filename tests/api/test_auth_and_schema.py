"""Tokens, sign-in auditing, the audit log, probes, the OpenAPI schema and the docs pages."""

from __future__ import annotations

import pytest
import yaml
from drf_spectacular.validation import validate_schema as validate_openapi
from rest_framework.test import APIClient

from accounts.choices import Role
from accounts.models import AuditLog

from .conftest import assert_error

pytestmark = pytest.mark.django_db


def test_token_for_username_and_password(user):
    client = APIClient()
    response = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "correct horse battery", "name": "ci"}, format="json"
    )
    assert response.status_code == 201, response.json()
    token = response.json()["token"]
    assert token.startswith("gw_") and response.json()["name"] == "ci"
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/workflows/").status_code == 200
    assert AuditLog.objects.filter(action="auth.token_signin", actor=user).count() == 1
    assert AuditLog.objects.filter(action="token.used", actor=user).count() == 1
    client.get("/api/v1/workflows/")  # token use is audited at most once a minute
    assert AuditLog.objects.filter(action="token.used", actor=user).count() == 1
    # No entry ever holds the token or the password.
    for entry in AuditLog.objects.all():
        assert token not in str(entry.data) and "correct horse" not in str(entry.data)


def test_wrong_password_is_401_and_audited(user):
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": "nope"}, format="json")
    assert_error(response, 401, "authentication_failed")
    assert AuditLog.objects.filter(action="auth.failed").exists()
    assert_error(APIClient().post("/api/v1/auth/token/", {"username": "alice"}, format="json"), 400)


def test_token_endpoint_is_throttled(user, settings):
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], auth="3/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    client = APIClient()
    codes = [
        client.post("/api/v1/auth/token/", {"username": "alice", "password": "x"}, format="json").status_code
        for _ in range(4)
    ]
    assert codes[:3] == [401, 401, 401]
    assert codes[3] == 429


def test_bad_token_is_401(client):
    response = client.get("/api/v1/workflows/", HTTP_AUTHORIZATION="Token gw_not-a-real-token")
    assert_error(response, 401)


def test_audit_log_for_owners_only(api_client, member_client, workflow, workspace):
    api_client.patch(f"/api/v1/workflows/{workflow.pk}/", {"description": "changed"}, format="json")
    entries = api_client.get("/api/v1/audit-log/?action=workflow.updated").json()
    assert entries["count"] == 1
    assert entries["results"][0]["actor"] == "alice"
    assert entries["results"][0]["workspace"] == workspace.pk
    _editor, editor = member_client(Role.EDITOR)
    listed = editor.get(f"/api/v1/audit-log/?workspace={workspace.pk}").json()["results"]
    assert all(entry["workspace"] is None for entry in listed)  # only the editor's own token use
    entry_id = entries["results"][0]["id"]
    assert_error(editor.get(f"/api/v1/audit-log/{entry_id}/"), 404)


def test_workspaces_list_with_role(api_client, workspace):
    results = api_client.get("/api/v1/workspaces/").json()["results"]
    assert [(w["id"], w["role"]) for w in results] == [(workspace.pk, Role.OWNER)]


def test_health_and_ready(client):
    assert client.get("/health/").json() == {"status": "ok"}
    response = client.get("/ready/")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "channel_layer": "ok"}


def test_ready_reports_a_broken_channel_layer(client, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}  # fmt: skip
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    try:
        response = client.get("/ready/")
    finally:
        channel_layers.backends.clear()
    assert response.status_code == 503
    assert response.json()["checks"]["channel_layer"].startswith("error")
    assert response.json()["checks"]["database"] == "ok"


def test_schema_is_valid_openapi_3(api_client):
    response = api_client.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate_openapi(schema)
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in [
        "/api/v1/workflows/",
        "/api/v1/workflows/{id}/runs/",
        "/api/v1/workflows/{workflow_pk}/nodes/{node_id}/",
        "/api/v1/runs/{id}/events/",
        "/api/v1/artifacts/{id}/download/",
        "/api/v1/credentials/{id}/test/",
        "/api/v1/collections/{id}/search/",
        "/api/v1/collections/{collection_pk}/documents/",
        "/api/v1/triggers/{id}/",
        "/api/v1/auth/token/",
        "/hooks/{token}/",
    ]:
        assert path in paths, path
    run_start = paths["/api/v1/workflows/{id}/runs/"]["post"]
    assert {"201", "202"} <= set(run_start["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in run_start["parameters"])
    credential = schema["components"]["schemas"]["Credential"]["properties"]
    assert "secret" not in credential and "secret_mask" in credential


def test_docs_page_and_browsable_api_for_a_signed_in_user(client, user):
    client.force_login(user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    page = client.get("/api/v1/workflows/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert b"Workflow" in page.content and b"<html" in page.content.lower()


def test_cors_origin_from_settings(client, settings, user):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    response = client.get("/health/", HTTP_ORIGIN="https://app.example.com")
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    response = client.get("/health/", HTTP_ORIGIN="https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in response


def test_page_sign_in_is_audited_and_readable_by_the_user(client, user):
    client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert AuditLog.objects.filter(action="auth.failed", data__username="alice").exists()
    response = client.post("/accounts/login/", {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 302
    entry = AuditLog.objects.get(action="auth.signin")
    assert entry.actor == user and entry.ip_address == "127.0.0.1"
    listed = client.get("/api/v1/audit-log/?action=auth.signin").json()
    assert [e["id"] for e in listed["results"]] == [entry.pk]


def test_per_user_throttle_answers_429_in_the_error_shape(api_client, settings, monkeypatch):
    from rest_framework.throttling import UserRateThrottle

    # DRF binds the rates when the class is defined (from THROTTLE_USER at start-up): patch them here.
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], user="2/min")
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", rates)
    assert [api_client.get("/api/v1/workflows/").status_code for _ in range(2)] == [200, 200]
    error = assert_error(api_client.get("/api/v1/workflows/"), 429, "throttled")
    assert "available in" in error["message"]
