"""The credentials page: provider cards, write-only secrets shown only as masks, Test, activate."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.choices import Role
from providers.credentials import credential_create, credential_secret
from providers.models import Credential

pytestmark = pytest.mark.django_db

SECRET = "sk-test-0123456789abcdefWXYZ"


@pytest.fixture
def credential(workspace, user):
    return credential_create(
        workspace=workspace, user=user, name="Main OpenAI", kind="llm", provider="openai", secret=SECRET
    )


def test_cards_empty_state(client_in):
    body = client_in.get(reverse("credential_list")).content.decode()
    assert "No credentials yet" in body
    assert "OpenAI" in body and "HTTP bearer token" in body  # provider cards are always there


def test_add_credential_shows_only_the_mask(client_in, workspace):
    form = client_in.get(reverse("credential_create") + "?kind=llm&provider=openai").content.decode()
    assert 'type="password"' in form and '<label for="id_secret">' in form
    response = client_in.post(
        reverse("credential_create"),
        {"name": "My key", "kind": "llm", "provider": "openai", "secret": SECRET},
        follow=True,
    )
    body = response.content.decode()
    credential = Credential.objects.get(name="My key")
    assert credential.workspace == workspace
    assert credential_secret(credential) == SECRET
    assert SECRET not in body and SECRET[-10:] not in body
    assert credential.secret_mask and credential.secret_mask in body


def test_field_errors(client_in, credential):
    response = client_in.post(
        reverse("credential_create"), {"name": "Main OpenAI", "kind": "llm", "provider": "openai"}
    )
    body = response.content.decode()
    assert response.status_code == 400
    assert "Enter the secret." in body
    response = client_in.post(
        reverse("credential_create"), {"name": "Main OpenAI", "kind": "llm", "provider": "openai", "secret": "x" * 30}
    )
    assert "already exists" in response.content.decode()


def test_edit_keeps_the_secret_unless_a_new_one_is_given(client_in, credential):
    url = reverse("credential_edit", args=[credential.pk])
    page = client_in.get(url).content.decode()
    assert SECRET not in page and credential.secret_mask in page
    client_in.post(url, {"name": "Renamed", "kind": "llm", "provider": "openai", "secret": ""})
    credential.refresh_from_db()
    assert credential.name == "Renamed" and credential_secret(credential) == SECRET
    client_in.post(
        url, {"name": "Renamed", "kind": "llm", "provider": "openai", "secret": "sk-another-secret-value-9999"}
    )
    credential.refresh_from_db()
    assert credential_secret(credential) == "sk-another-secret-value-9999"


def test_test_button_records_and_shows_the_result(client_in, workspace, user, loopback):
    good = credential_create(
        workspace=workspace,
        user=user,
        name="API",
        kind="http_bearer",
        secret="tok-1234567890abcdef",
        base_url=loopback.url + "/ok",
    )
    response = client_in.post(reverse("credential_test", args=[good.pk]), follow=True)
    assert "works: HTTP 200" in response.content.decode()
    assert loopback.seen == ["Bearer tok-1234567890abcdef"]
    bad = credential_create(
        workspace=workspace,
        user=user,
        name="Denied",
        kind="http_bearer",
        secret="tok-abcdef1234567890",
        base_url=loopback.url + "/deny",
    )
    body = client_in.post(reverse("credential_test", args=[bad.pk]), follow=True).content.decode()
    assert "failed its test" in body and "401" in body
    assert "tok-abcdef1234567890" not in body
    bad.refresh_from_db()
    assert bad.last_test_ok is False


def test_activate_and_deactivate(client_in, credential):
    client_in.post(reverse("credential_toggle", args=[credential.pk]))
    credential.refresh_from_db()
    assert credential.is_active is False
    assert "Activate" in client_in.get(reverse("credential_list")).content.decode()
    client_in.post(reverse("credential_toggle", args=[credential.pk]))
    credential.refresh_from_db()
    assert credential.is_active is True


def test_other_users_credential_is_404(other_client, credential):
    assert "Main OpenAI" not in other_client.get(reverse("credential_list")).content.decode()
    assert other_client.get(reverse("credential_edit", args=[credential.pk])).status_code == 404
    for name in ("credential_test", "credential_toggle", "credential_edit"):
        assert other_client.post(reverse(name, args=[credential.pk])).status_code == 404


def test_runner_cannot_add_credentials(client, make_member, credential, workspace):
    client.force_login(make_member(Role.RUNNER))
    client.post(reverse("accounts:workspace_switch"), {"workspace": workspace.pk})
    assert "Add credential" not in client.get(reverse("credential_list")).content.decode()
    response = client.post(
        reverse("credential_create"), {"name": "x", "kind": "llm", "provider": "openai", "secret": SECRET}
    )
    assert response.status_code == 403
    assert client.post(reverse("credential_toggle", args=[credential.pk])).status_code == 403
