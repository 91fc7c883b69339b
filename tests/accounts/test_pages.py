"""Sign-in/out/up pages, the API tokens page, workspaces, the switcher and the members page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.choices import Role
from accounts.middleware import SESSION_KEY
from accounts.models import ApiToken, Membership, User, Workspace
from accounts.services import workspace_create

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def test_sign_in_and_out(client, user):
    page = client.get(reverse("accounts:login"))
    assert page.status_code == 200
    assert b"Sign in" in page.content
    wrong = client.post(reverse("accounts:login"), {"username": "alice", "password": "nope"})
    assert wrong.status_code == 200
    assert "_auth_user_id" not in client.session
    response = client.post(reverse("accounts:login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.get(reverse("accounts:logout")).status_code == 405  # a link cannot sign out
    assert "_auth_user_id" in client.session
    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


def test_sign_up_creates_user_with_personal_workspace(client, settings):
    settings.SIGNUP_ENABLED = True
    assert client.get(reverse("accounts:signup")).status_code == 200
    response = client.post(
        reverse("accounts:signup"),
        {"username": "newbie", "email": "n@example.com", "password1": "a-long-pass-42", "password2": "a-long-pass-42"},
    )
    assert response.status_code == 302
    user = User.objects.get(username="newbie")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert Membership.objects.get(user=user, workspace__is_personal=True).role == Role.OWNER


def test_sign_up_refuses_bad_input(client, settings, user):
    settings.SIGNUP_ENABLED = True
    response = client.post(
        reverse("accounts:signup"),
        {"username": "alice", "password1": "a-long-pass-42", "password2": "different-42"},
    )
    assert response.status_code == 200
    assert response.context["form"].errors.keys() >= {"username", "password2"}
    assert User.objects.count() == 1


def test_sign_up_turned_off(client, settings):
    settings.SIGNUP_ENABLED = False
    closed = client.get(reverse("accounts:signup"))
    assert closed.status_code == 404
    assert b"Sign-up is turned off" in closed.content
    response = client.post(
        reverse("accounts:signup"),
        {"username": "newbie", "password1": "a-long-pass-42", "password2": "a-long-pass-42"},
    )
    assert response.status_code == 404
    assert not User.objects.filter(username="newbie").exists()
    assert b"Sign up" not in client.get(reverse("accounts:login")).content


def test_pages_need_sign_in(client):
    for name in ("accounts:tokens", "accounts:workspaces"):
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("accounts:login"))


def test_tokens_page_creates_shows_once_and_revokes(client, user):
    client.force_login(user)
    response = client.post(reverse("accounts:tokens"), {"name": "ci"})
    assert response.status_code == 201
    key = response.context["new_key"]
    assert key.startswith("gw_") and key.encode() in response.content
    token = ApiToken.objects.get(user=user, name="ci")
    assert token.key_hash == ApiToken.hash_key(key) and key not in token.key_hash
    listing = client.get(reverse("accounts:tokens"))
    assert key.encode() not in listing.content  # never shown again
    assert token.key_prefix.encode() in listing.content
    assert b"never" in listing.content  # last used
    assert client.post(reverse("accounts:tokens"), {"name": ""}).status_code == 400
    client.post(reverse("accounts:token_revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_cannot_revoke_someone_elses_token(client, user, other_user):
    from accounts.services import api_token_create

    token, _ = api_token_create(user=other_user, name="theirs")
    client.force_login(user)
    assert client.post(reverse("accounts:token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_create_workspace_and_switch(client, user, other_user):
    client.force_login(user)
    response = client.post(reverse("accounts:workspaces"), {"name": "Team"})
    team = Workspace.objects.get(name="Team")
    assert response.status_code == 302
    assert client.session[SESSION_KEY] == team.pk
    personal = Workspace.objects.get(is_personal=True, created_by=user)
    response = client.post(
        reverse("accounts:workspace_switch"), {"workspace": personal.pk, "next": "/accounts/tokens/"}
    )
    assert response["Location"] == "/accounts/tokens/"
    assert client.session[SESSION_KEY] == personal.pk
    # Someone else's workspace cannot be chosen, and an outside redirect is refused.
    theirs = Workspace.objects.get(created_by=other_user)
    assert client.post(reverse("accounts:workspace_switch"), {"workspace": theirs.pk}).status_code == 404
    assert client.session[SESSION_KEY] == personal.pk
    response = client.post(reverse("accounts:workspace_switch"), {"workspace": team.pk, "next": "https://evil.example"})
    assert response["Location"] == "/"
    assert client.post(reverse("accounts:workspaces"), {"name": ""}).status_code == 400


def test_members_page_invite_change_remove(client, user, other_user):
    team = workspace_create(name="Team", owner=user)
    client.force_login(user)
    url = reverse("accounts:members", args=[team.pk])
    assert client.get(url).status_code == 200
    response = client.post(url, {"user": "mallory@example.com", "role": Role.RUNNER})
    assert response.status_code == 302
    membership = Membership.objects.get(workspace=team, user=other_user)
    assert membership.role == Role.RUNNER
    assert client.post(url, {"user": "nobody", "role": Role.VIEWER}).status_code == 400
    assert client.post(url, {"user": "mallory", "role": Role.VIEWER}).status_code == 400  # already a member
    change = reverse("accounts:member_change", args=[team.pk, membership.pk])
    client.post(change, {"role": Role.EDITOR})
    membership.refresh_from_db()
    assert membership.role == Role.EDITOR
    # The last owner can neither be demoted nor removed.
    own = Membership.objects.get(workspace=team, user=user)
    client.post(reverse("accounts:member_change", args=[team.pk, own.pk]), {"role": Role.VIEWER})
    client.post(reverse("accounts:member_change", args=[team.pk, own.pk]), {"remove": "1"})
    own.refresh_from_db()
    assert own.role == Role.OWNER
    client.post(change, {"remove": "1"})
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_members_page_refuses_non_owners(client, user, other_user):
    team = workspace_create(name="Team", owner=user)
    Membership.objects.create(workspace=team, user=other_user, role=Role.EDITOR)
    client.force_login(other_user)
    url = reverse("accounts:members", args=[team.pk])
    page = client.get(url)
    assert page.status_code == 200 and b"Invite a member" not in page.content
    assert client.post(url, {"user": "alice", "role": Role.VIEWER}).status_code == 403
    own = Membership.objects.get(workspace=team, user=user)
    client.post(reverse("accounts:member_change", args=[team.pk, own.pk]), {"remove": "1"})
    assert Membership.objects.filter(pk=own.pk).exists()
    # A workspace the user is not in does not exist for them.
    client.force_login(User.objects.create_user(username="stranger", password=PASSWORD))
    assert client.get(url).status_code == 404


def test_audit_entries_from_a_request_note_the_client_address(client, user):
    from accounts.models import AuditLog

    client.force_login(user)
    client.post(reverse("accounts:tokens"), {"name": "ci"}, REMOTE_ADDR="203.0.113.7")
    entry = AuditLog.objects.get(action="token.created")
    assert entry.ip_address == "203.0.113.7"
    assert entry.actor == user
    assert AuditLog.objects.get(action="workspace.created").ip_address is None  # made outside a request
