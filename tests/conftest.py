"""Shared fixtures. Each area keeps its own fixtures in tests/<area>/conftest.py."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.choices import Role
from accounts.models import Membership
from accounts.services import api_token_create, personal_workspace, user_create


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def user(db):
    return user_create(username="alice", password="correct horse battery", email="alice@example.com")


@pytest.fixture
def other_user(db):
    return user_create(username="mallory", password="correct horse battery", email="mallory@example.com")


@pytest.fixture
def workspace(user):
    return personal_workspace(user)


@pytest.fixture
def make_member(workspace):
    """make_member(role) -> a new user with that role in ``workspace``."""
    counter = {"n": 0}

    def make(role: str = Role.VIEWER):
        counter["n"] += 1
        member = user_create(username=f"{role}{counter['n']}", password="correct horse battery")
        Membership.objects.create(workspace=workspace, user=member, role=role)
        return member

    return make


@pytest.fixture
def api_client(user):
    client = APIClient()
    _, key = api_token_create(user=user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


@pytest.fixture
def other_api_client(other_user):
    client = APIClient()
    _, key = api_token_create(user=other_user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client
