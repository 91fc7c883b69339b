"""Roles: each role is allowed and refused the right actions; other workspaces are invisible."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from accounts.choices import Action, Role
from accounts.models import AuditLog, Membership, Workspace
from accounts.permissions import can, require, role_for
from accounts.services import (
    membership_add,
    membership_remove,
    membership_set_role,
    personal_workspace,
    workspace_create,
)
from workflows.models import Trigger, Workflow

pytestmark = pytest.mark.django_db

EXPECTED = {
    Role.OWNER: {Action.VIEW, Action.RUN, Action.EDIT, Action.MANAGE},
    Role.EDITOR: {Action.VIEW, Action.RUN, Action.EDIT},
    Role.RUNNER: {Action.VIEW, Action.RUN},
    Role.VIEWER: {Action.VIEW},
}


@pytest.mark.parametrize("role", list(Role))
def test_each_role_allowed_and_refused(role, workspace, make_member):
    member = make_member(role)
    assert role_for(member, workspace) == role
    for action in Action:
        allowed = action in EXPECTED[role]
        assert can(member, workspace, action) is allowed, (role, action)
        if allowed:
            require(member, workspace, action)
        else:
            with pytest.raises(PermissionDenied):
                require(member, workspace, action)
        assert Workspace.objects.for_user(member, action).filter(pk=workspace.pk).exists() is allowed


def test_outsider_and_anonymous_are_refused(workspace, other_user):
    from django.contrib.auth.models import AnonymousUser

    for who in (other_user, AnonymousUser()):
        assert role_for(who, workspace) is None
        for action in Action:
            assert not can(who, workspace, action)
    require(None, workspace, Action.MANAGE)  # the system itself


def test_other_workspace_objects_are_invisible(user, other_user, workspace):
    theirs = personal_workspace(other_user)
    mine = Workflow.objects.create(workspace=workspace, name="Mine", slug="mine")
    hidden = Workflow.objects.create(workspace=theirs, name="Theirs", slug="theirs")
    Trigger.objects.create(workflow=hidden, kind="webhook")
    assert list(Workflow.objects.for_user(user)) == [mine]
    assert list(Workflow.objects.for_user(other_user)) == [hidden]
    assert not Trigger.objects.for_user(user).exists()
    assert Trigger.objects.for_user(other_user).count() == 1
    assert list(Workspace.objects.for_user(user)) == [workspace]
    Membership.objects.create(workspace=theirs, user=user, role=Role.VIEWER)
    assert set(Workflow.objects.for_user(user)) == {mine, hidden}
    assert not Workflow.objects.for_user(user, Action.EDIT).filter(pk=hidden.pk).exists()


def test_audit_log_is_for_owners_only(workspace, make_member):
    editor = make_member(Role.EDITOR)
    assert AuditLog.objects.filter(workspace=workspace).exists()
    assert not AuditLog.objects.for_user(editor).filter(workspace=workspace).exists()
    assert (
        AuditLog.objects.for_user(workspace.memberships.get(role=Role.OWNER).user).filter(workspace=workspace).exists()
    )


def test_membership_services(user, other_user, make_member):
    team = workspace_create(name="Team", owner=user)
    membership = membership_add(workspace=team, actor=user, identifier="MALLORY", role=Role.VIEWER)
    assert membership.user == other_user
    with pytest.raises(ValidationError):
        membership_add(workspace=team, actor=user, identifier="mallory", role=Role.VIEWER)
    with pytest.raises(ValidationError) as info:
        membership_add(workspace=team, actor=user, identifier="ghost", role=Role.VIEWER)
    assert "user" in info.value.message_dict
    with pytest.raises(ValidationError) as info:
        membership_set_role(membership=membership, actor=user, role="king")
    assert "role" in info.value.message_dict
    with pytest.raises(PermissionDenied):
        membership_set_role(membership=membership, actor=other_user, role=Role.OWNER)
    membership_set_role(membership=membership, actor=user, role=Role.OWNER)
    own = Membership.objects.get(workspace=team, user=user)
    membership_remove(membership=own, actor=user)  # another owner exists now
    with pytest.raises(ValidationError):
        membership_remove(membership=membership, actor=other_user)  # the last owner stays
    with pytest.raises(ValidationError):
        membership_set_role(membership=membership, actor=other_user, role=Role.EDITOR)
    assert {"member.added", "member.role_changed", "member.removed"} <= set(
        AuditLog.objects.filter(workspace=team).values_list("action", flat=True)
    )


def test_workspace_create_requires_a_name(user):
    with pytest.raises(ValidationError):
        workspace_create(name=" ", owner=user)
