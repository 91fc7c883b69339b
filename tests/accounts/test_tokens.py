"""API tokens: only the hash is stored; revoked tokens stop working everywhere."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_authenticate, api_token_create, api_token_revoke

pytestmark = pytest.mark.django_db


def test_plaintext_is_never_stored(user):
    token, key = api_token_create(user=user, name="ci")
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert key not in [str(value) for value in row.values()]
    assert row["key_hash"] == ApiToken.hash_key(key) and len(row["key_hash"]) == 64
    assert key.startswith(row["key_prefix"])


def test_authenticate_and_last_used(user):
    token, key = api_token_create(user=user, name="ci")
    assert token.last_used_at is None
    assert api_token_authenticate(key) == token
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert api_token_authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert api_token_authenticate("") is None
    assert api_token_authenticate("not-a-token") is None


def test_revoked_token_is_refused(user):
    token, key = api_token_create(user=user, name="ci")
    api_token_revoke(token=token, user=user)
    assert api_token_authenticate(key) is None


def test_inactive_user_token_is_refused(user):
    _, key = api_token_create(user=user, name="ci")
    user.is_active = False
    user.save()
    assert api_token_authenticate(key) is None


def test_revoked_token_gets_401_from_the_api(user):
    token, key = api_token_create(user=user, name="ci")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/schema/").status_code == 200
    api_token_revoke(token=token, user=user)
    response = client.get("/api/v1/schema/")
    assert response.status_code == 401
    assert b"Invalid or revoked token." in response.content


def test_token_needs_a_name(user):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        api_token_create(user=user, name="  ")
