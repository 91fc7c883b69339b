"""Writes for accounts: users, workspaces, memberships, API tokens."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from .audit import audit
from .choices import Role
from .models import ApiToken, Membership, User, Workspace


def _unique_workspace_slug(name: str) -> str:
    base = slugify(name)[:100] or "workspace"
    slug, n = base, 1
    while Workspace.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


@transaction.atomic
def workspace_create(*, name: str, owner: User, is_personal: bool = False) -> Workspace:
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
