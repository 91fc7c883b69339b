"""Writes for accounts: users, workspaces, memberships, API tokens."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from .audit import audit
from .choices import Action, Role
from .models import ApiToken, Membership, User, Workspace
from .permissions import require


def _unique_workspace_slug(name: str) -> str:
    base = slugify(name)[:100] or "workspace"
    slug, n = base, 1
    while Workspace.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def workspace_create(*, name: str, owner: User, is_personal: bool = False) -> Workspace:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": ["Enter a name of 1 to 100 characters."]})
    workspace = Workspace.objects.create(
        name=name, slug=_unique_workspace_slug(name), is_personal=is_personal, created_by=owner
    )
    Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    audit(action="workspace.created", actor=owner, workspace=workspace, target=workspace)
    return workspace


def personal_workspace(user: User) -> Workspace:
    """The user's personal workspace, created on first need (covers users made by createsuperuser)."""
    workspace = Workspace.objects.filter(is_personal=True, created_by=user, memberships__user=user).first()
    if workspace is None:
        workspace = workspace_create(name=f"{user.username}'s workspace", owner=user, is_personal=True)
    return workspace


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "", **extra) -> User:
    user = User.objects.create_user(username=username, email=email, password=password, **extra)
    personal_workspace(user)
    return user


def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token and return it with its plaintext key, which is never stored or shown again."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": ["Give the token a name of 1 to 100 characters."]})
    key = ApiToken.generate_key()
    token = ApiToken.objects.create(user=user, name=name, key_prefix=key[:10], key_hash=ApiToken.hash_key(key))
    audit(action="token.created", actor=user, target=token, data={"name": name, "prefix": token.key_prefix})
    return token, key


def api_token_revoke(*, token: ApiToken, user: User | None = None) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit(action="token.revoked", actor=user or token.user, target=token, data={"prefix": token.key_prefix})
    return token


def api_token_authenticate(key: str) -> ApiToken | None:
    """Return the active token for ``key`` and note its use (at most once a minute per token)."""
    if not key or not key.startswith(ApiToken.PREFIX):
        return None
    token = ApiToken.objects.active().select_related("user").filter(key_hash=ApiToken.hash_key(key)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# -- members ------------------------------------------------------------------------------------


def _find_user(identifier: str) -> User:
    identifier = (identifier or "").strip()
    if not identifier:
        raise ValidationError({"user": ["Enter a username or an email address."]})
    found = User.objects.filter(is_active=True).filter(
        Q(username__iexact=identifier) | Q(email__iexact=identifier)
        if "@" in identifier
        else Q(username__iexact=identifier)
    )
    user = found.first() if found.count() == 1 else None
    if user is None:
        raise ValidationError({"user": [f"No single active user has the username or email {identifier!r}."]})
    return user


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": [f"Choose one of {', '.join(Role.values)}."]})


@transaction.atomic
def membership_add(*, workspace: Workspace, actor: User | None, identifier: str, role: str = Role.VIEWER) -> Membership:
    """Invite an existing user (by username or email) into ``workspace`` with ``role``."""
    require(actor, workspace, Action.MANAGE)
    _check_role(role)
    member = _find_user(identifier)
    if Membership.objects.filter(workspace=workspace, user=member).exists():
        raise ValidationError({"user": [f"{member.username} is already a member of this workspace."]})
    membership = Membership.objects.create(workspace=workspace, user=member, role=role)
    audit(action="member.added", actor=actor, workspace=workspace, target=membership,
          data={"user": member.username, "role": role})  # fmt: skip
    return membership


def _other_owners(membership: Membership) -> bool:
    return (
        Membership.objects.filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
        .exists()
    )


@transaction.atomic
def membership_set_role(*, membership: Membership, actor: User | None, role: str) -> Membership:
    require(actor, membership.workspace_id, Action.MANAGE)
    _check_role(role)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and role != Role.OWNER and not _other_owners(membership):
        raise ValidationError({"role": ["A workspace needs at least one owner: make someone else owner first."]})
    old = membership.role
    if old != role:
        membership.role = role
        membership.save(update_fields=["role"])
        audit(action="member.role_changed", actor=actor, workspace=membership.workspace_id, target=membership,
              data={"user": membership.user.username, "from": old, "to": role})  # fmt: skip
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User | None) -> None:
    """Remove a member. Owners may remove anyone but the last owner; anyone may leave (but not the last owner)."""
    if actor is None or actor.pk != membership.user_id:
        require(actor, membership.workspace_id, Action.MANAGE)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and not _other_owners(membership):
        raise ValidationError({"user": ["The last owner cannot be removed: make someone else owner first."]})
    audit(action="member.removed", actor=actor, workspace=membership.workspace_id, target=membership,
          data={"user": membership.user.username, "role": membership.role})  # fmt: skip
    membership.delete()


@transaction.atomic
def workspace_rename(*, workspace: Workspace, actor: User | None, name: str) -> Workspace:
    require(actor, workspace, Action.MANAGE)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": ["Enter a name of 1 to 100 characters."]})
    workspace.name = name
    workspace.save(update_fields=["name"])
    audit(action="workspace.renamed", actor=actor, workspace=workspace, target=workspace, data={"name": name})
    return workspace
