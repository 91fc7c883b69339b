"""Accounts admin as a staff user: users, tokens (no hashes shown), workspaces, members, audit log."""

from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import ApiToken, AuditLog, Membership, User, Workspace
from accounts.services import api_token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, db):
    staff = User.objects.create_superuser(username="admin", password="admin-pass-123", email="admin@example.com")
    client.force_login(staff)
    return client


def test_pages_render(admin_client, user, workspace):
    token, key = api_token_create(user=user, name="ci")
    membership = Membership.objects.get(user=user, workspace=workspace)
    urls = [
        reverse("admin:accounts_user_changelist"),
        reverse("admin:accounts_user_change", args=[user.pk]),
        reverse("admin:accounts_user_add"),
        reverse("admin:accounts_apitoken_changelist"),
        reverse("admin:accounts_apitoken_change", args=[token.pk]),
        reverse("admin:accounts_apitoken_add"),
        reverse("admin:accounts_workspace_changelist"),
        reverse("admin:accounts_workspace_change", args=[workspace.pk]),
        reverse("admin:accounts_workspace_add"),
        reverse("admin:accounts_membership_changelist"),
        reverse("admin:accounts_membership_change", args=[membership.pk]),
        reverse("admin:accounts_auditlog_changelist"),
        reverse("admin:accounts_auditlog_change", args=[AuditLog.objects.first().pk]),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert token.key_hash.encode() not in response.content, url
        assert key.encode() not in response.content, url
    assert token.key_prefix.encode() in admin_client.get(reverse("admin:accounts_apitoken_changelist")).content


def test_create_token_shows_key_once(admin_client, user):
    response = admin_client.post(
        reverse("admin:accounts_apitoken_add"), {"user": user.pk, "name": "from admin"}, follow=True
    )
    token = ApiToken.objects.get(name="from admin")
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1
    key = shown[0].split(": ")[1].split(" ")[0]
    assert ApiToken.hash_key(key) == token.key_hash
    assert key.encode() not in admin_client.get(reverse("admin:accounts_apitoken_change", args=[token.pk])).content


def test_revoke_action(admin_client, user):
    token, _ = api_token_create(user=user, name="ci")
    admin_client.post(
        reverse("admin:accounts_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_add_user_gets_a_personal_workspace(admin_client):
    response = admin_client.post(
        reverse("admin:accounts_user_add"),
        {"username": "bob", "password1": "a-long-pass-42", "password2": "a-long-pass-42", "usable_password": "true"},
    )
    assert response.status_code == 302
    assert Workspace.objects.filter(is_personal=True, memberships__user__username="bob").exists()


def test_audit_log_is_read_only(admin_client, user):
    entry = AuditLog.objects.first()
    assert admin_client.get(reverse("admin:accounts_auditlog_add")).status_code == 403
    admin_client.post(reverse("admin:accounts_auditlog_delete", args=[entry.pk]), {"post": "yes"})
    assert AuditLog.objects.filter(pk=entry.pk).exists()
