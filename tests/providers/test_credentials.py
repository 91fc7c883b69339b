"""Credential services: validation, write-only secrets, audit, tests against real services, the admin."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from accounts.choices import Role
from accounts.models import AuditLog
from providers.choices import CredentialKind
from providers.credentials import (
    CredentialNotFound,
    credential_create,
    credential_delete,
    credential_resolve,
    credential_secret,
    credential_test,
    credential_update,
    http_auth_headers,
    mask_secret,
)
from providers.models import Credential

pytestmark = pytest.mark.django_db

SECRET = "tok-9f8e7d6c5b4a39281706zz"


def _bearer(workspace, user, name="api", secret=SECRET, **kwargs):
    return credential_create(
        workspace=workspace, user=user, name=name, kind=CredentialKind.HTTP_BEARER, secret=secret, **kwargs
    )


def test_mask_secret():
    assert mask_secret("sk-abcdefghijklmnopqrstuvwxyza1b2") == "sk-…a1b2"
    assert mask_secret("short12345") == "…45"
    assert mask_secret("tiny") == "••••"
    assert mask_secret("") == ""


def test_names_are_unique_per_workspace(workspace, user, other_user):
    _bearer(workspace, user)
    with pytest.raises(ValidationError) as excinfo:
        _bearer(workspace, user)
    assert "already exists in this workspace" in excinfo.value.message_dict["name"][0]
    from accounts.services import personal_workspace

    other = _bearer(personal_workspace(other_user), other_user)  # another workspace may reuse the name
    assert other.name == "api"


@pytest.mark.parametrize(
    ("kind", "kwargs", "field"),
    [
        (CredentialKind.HTTP_BEARER, {"secret": ""}, "secret"),
        (CredentialKind.HTTP_BASIC, {"secret": "pw123456"}, "extra"),
        (CredentialKind.HTTP_HEADER, {"secret": "v", "extra": {"header_name": "Bad Header"}}, "extra"),
        (CredentialKind.DATABASE, {"secret": "mysql://x/y"}, "secret"),
        (CredentialKind.LLM, {"secret": "k"}, "provider"),
        (CredentialKind.LLM, {"provider": "openai"}, "secret"),
        ("nope", {"secret": "x"}, "kind"),
        (CredentialKind.HTTP_BEARER, {"secret": "x", "base_url": "ftp://x"}, "base_url"),
        (CredentialKind.HTTP_BEARER, {"secret": "x", "extra": ["not", "an", "object"]}, "extra"),
    ],
)
def test_bad_input_gets_field_errors(workspace, user, kind, kwargs, field):
    with pytest.raises(ValidationError) as excinfo:
        credential_create(workspace=workspace, user=user, name="c", kind=kind, **kwargs)
    assert field in excinfo.value.message_dict
    assert not Credential.objects.exists()


def test_keyless_llm_provider_needs_no_secret(workspace, user):
    credential = credential_create(
        workspace=workspace, user=user, name="local", kind=CredentialKind.LLM, provider="local"
    )
    assert credential.secret_ciphertext == "" and credential_secret(credential) == ""


def test_update_keeps_the_secret_when_blank_and_audits_without_it(workspace, user):
    credential = _bearer(workspace, user)
    credential_update(credential=credential, user=user, secret="", base_url="https://api.example.com")
    credential.refresh_from_db()
    assert credential_secret(credential) == SECRET
    assert credential.base_url == "https://api.example.com"
    credential_update(credential=credential, user=user, secret="new-secret-value-0000000001")
    credential.refresh_from_db()
    assert credential_secret(credential) == "new-secret-value-0000000001"
    assert credential.secret_mask == "new…0001"
    actions = list(AuditLog.objects.filter(target_id=str(credential.pk)).values_list("action", "data"))
    assert [a for a, _ in actions].count("credential.changed") == 2
    assert {"fields": ["secret"], "mask": "new…0001"} in [d for _, d in actions]
    assert all(SECRET not in str(d) and "new-secret-value" not in str(d) for _, d in actions)


def test_update_refuses_unknown_fields_and_duplicate_names(workspace, user):
    first = _bearer(workspace, user, name="one")
    _bearer(workspace, user, name="two")
    with pytest.raises(ValidationError) as excinfo:
        credential_update(credential=first, user=user, name="two")
    assert "already exists" in excinfo.value.message_dict["name"][0]
    with pytest.raises(ValidationError):
        credential_update(credential=first, user=user, secret_ciphertext="x")
    first.refresh_from_db()
    assert first.name == "one"


def test_permissions(workspace, user, make_member):
    viewer = make_member(Role.VIEWER)
    with pytest.raises(PermissionDenied):
        _bearer(workspace, viewer)
    credential = _bearer(workspace, user)
    with pytest.raises(PermissionDenied):
        credential_delete(credential=credential, user=viewer)
    editor = make_member(Role.EDITOR)
    credential_delete(credential=credential, user=editor)
    assert not Credential.objects.exists()
    assert AuditLog.objects.filter(action="credential.deleted").exists()


def test_resolve_by_name_or_id_active_only(workspace, user, other_user):
    credential = _bearer(workspace, user)
    assert credential_resolve(workspace_id=workspace.pk, ref="api") == credential
    assert credential_resolve(workspace_id=workspace.pk, ref=credential.pk) == credential
    assert credential_resolve(workspace_id=workspace.pk, ref=str(credential.pk)) == credential
    from accounts.services import personal_workspace

    with pytest.raises(CredentialNotFound, match="does not exist in this workspace"):
        credential_resolve(workspace_id=personal_workspace(other_user).pk, ref="api")
    with pytest.raises(CredentialNotFound, match="needs a Database URL"):
        credential_resolve(workspace_id=workspace.pk, ref="api", kinds=(CredentialKind.DATABASE,))
    credential_update(credential=credential, user=user, is_active=False)
    with pytest.raises(CredentialNotFound, match="disabled"):
        credential_resolve(workspace_id=workspace.pk, ref="api")


def test_auth_headers_per_kind(workspace, user):
    basic = credential_create(
        workspace=workspace, user=user, name="b", kind=CredentialKind.HTTP_BASIC, secret="pw", extra={"username": "bob"}
    )
    header = credential_create(
        workspace=workspace,
        user=user,
        name="h",
        kind=CredentialKind.HTTP_HEADER,
        secret="key123",
        extra={"header_name": "X-Api-Key"},
    )
    assert http_auth_headers(_bearer(workspace, user)) == {"Authorization": f"Bearer {SECRET}"}
    assert http_auth_headers(basic) == {"Authorization": "Basic Ym9iOnB3"}
    assert http_auth_headers(header) == {"X-Api-Key": "key123"}


def test_http_test_goes_through_the_guard_and_records_the_result(settings, workspace, user, http_server, caplog):
    caplog.set_level(logging.DEBUG)
    credential = _bearer(workspace, user, base_url=http_server.url("/echo"))
    settings.SSRF_ALLOWLIST = []
    credential_test(credential=credential, user=user)
    credential.refresh_from_db()
    assert credential.last_test_ok is False and "Destination blocked" in credential.last_test_message
    assert credential.last_tested_at is not None
    assert http_server.requests == []

    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    credential_test(credential=credential, user=user)
    credential.refresh_from_db()
    assert credential.last_test_ok is True and credential.last_test_message == "HTTP 200 OK"
    assert http_server.last().headers["Authorization"] == f"Bearer {SECRET}"

    credential_update(credential=credential, user=user, base_url=http_server.url("/status/401"))
    credential_test(credential=credential, user=user)
    credential.refresh_from_db()
    assert credential.last_test_ok is False and "401" in credential.last_test_message
    assert SECRET not in caplog.text
    assert AuditLog.objects.filter(action="credential.tested").count() == 3


def test_database_test_connects_and_selects_one(settings, workspace, user, tmp_path):
    path = tmp_path / "target.db"
    sqlite3.connect(path).close()
    credential = credential_create(
        workspace=workspace, user=user, name="db", kind=CredentialKind.DATABASE, secret=f"sqlite:///{path}"
    )
    credential_test(credential=credential, user=user)
    assert credential.last_test_ok is True and "SQLite" in credential.last_test_message
    missing = credential_create(
        workspace=workspace, user=user, name="db2", kind=CredentialKind.DATABASE, secret=f"sqlite:///{tmp_path}/no.db"
    )
    credential_test(credential=missing, user=user)
    assert missing.last_test_ok is False and "does not exist" in missing.last_test_message


def test_llm_test_says_when_the_llm_helper_is_missing(workspace, user):
    credential = credential_create(
        workspace=workspace,
        user=user,
        name="llm",
        kind=CredentialKind.LLM,
        provider="openai_compatible",
        base_url="http://127.0.0.1:9/v1",  # nothing listens there: the test fails fast, and says so
        secret=SECRET,
    )
    credential_test(credential=credential, user=user)
    credential.refresh_from_db()
    try:
        import providers.llm  # noqa: F401
    except ImportError:
        assert credential.last_test_ok is False and "not available yet" in credential.last_test_message
    else:
        assert credential.last_tested_at is not None and credential.last_test_ok is False
        assert credential.last_test_message
    assert SECRET not in credential.last_test_message


# -- admin --------------------------------------------------------------------------------------------
@pytest.fixture
def admin_client(client, user):
    user.is_staff = user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_admin_secret_is_write_only(admin_client, workspace, user):
    url = reverse("admin:providers_credential_add")
    form = {
        "workspace": workspace.pk,
        "name": "from-admin",
        "kind": CredentialKind.HTTP_BEARER,
        "provider": "",
        "base_url": "",
        "default_model": "",
        "extra": "{}",
        "is_active": "on",
        "secret": SECRET,
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    credential = Credential.objects.get(name="from-admin")
    assert credential_secret(credential) == SECRET
    change_url = reverse("admin:providers_credential_change", args=[credential.pk])
    page = admin_client.get(change_url).content.decode()
    assert SECRET not in page and credential.secret_mask in page
    listing = admin_client.get(reverse("admin:providers_credential_changelist")).content.decode()
    assert SECRET not in listing and credential.secret_mask in listing
    # saving with a blank secret keeps it
    response = admin_client.post(change_url, {**form, "secret": "", "default_model": "m"})
    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential_secret(credential) == SECRET and credential.default_model == "m"
    # a duplicate name is a form error
    response = admin_client.post(url, form)
    assert response.status_code == 200 and "already exists" in response.content.decode()


def test_admin_test_action(admin_client, workspace, user, settings, http_server):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    credential = _bearer(workspace, user, base_url=http_server.url("/echo"))
    response = admin_client.post(
        reverse("admin:providers_credential_changelist"),
        {"action": "test_credentials", "_selected_action": [credential.pk]},
        follow=True,
    )
    assert "HTTP 200 OK" in response.content.decode()
    credential.refresh_from_db()
    assert credential.last_test_ok is True
    # the change page has its own "Save and test" button
    change_url = reverse("admin:providers_credential_change", args=[credential.pk])
    page = admin_client.get(change_url).content.decode()
    assert 'name="_test"' in page
    form = {
        "workspace": workspace.pk,
        "name": "api",
        "kind": CredentialKind.HTTP_BEARER,
        "base_url": http_server.url("/status/403"),
        "extra": "{}",
        "is_active": "on",
        "secret": "",
        "_test": "1",
    }
    response = admin_client.post(change_url, form, follow=True)
    assert "HTTP 403" in response.content.decode()
    credential.refresh_from_db()
    assert credential.last_test_ok is False and credential.base_url.endswith("/status/403")


# -- API and pages never show the secret ------------------------------------------------------------
def test_api_and_pages_show_only_the_mask(api_client, client, user, workspace, caplog):
    caplog.set_level(logging.DEBUG)
    created = api_client.post(
        "/api/v1/credentials/",
        {"workspace": workspace.pk, "name": "via-api", "kind": "http_bearer", "secret": SECRET},
        format="json",
    )
    assert created.status_code == 201, created.content
    credential = Credential.objects.get(name="via-api")
    assert credential_secret(credential) == SECRET
    responses = [
        created,
        api_client.get("/api/v1/credentials/"),
        api_client.get(f"/api/v1/credentials/{credential.pk}/"),
        api_client.patch(f"/api/v1/credentials/{credential.pk}/", {"default_model": "m"}, format="json"),
    ]
    duplicate = api_client.post(
        "/api/v1/credentials/",
        {"workspace": workspace.pk, "name": "via-api", "kind": "http_bearer", "secret": SECRET},
        format="json",
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["fields"]["name"] == [
        "A credential named 'via-api' already exists in this workspace."
    ]
    client.force_login(user)
    responses += [client.get(reverse("credential_list")), client.get(reverse("credential_edit", args=[credential.pk]))]
    for response in [*responses, duplicate]:
        assert response.status_code in (200, 201, 400)
        assert SECRET not in response.content.decode()
    assert credential.secret_mask in responses[1].content.decode()
    credential.refresh_from_db()
    assert credential_secret(credential) == SECRET  # the PATCH without a secret kept it
    assert SECRET not in caplog.text
