from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from .choices import Action, Role, roles_allowing

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser


class User(AbstractUser):
    """A person who signs in. ``monthly_token_budget`` caps LLM tokens per calendar month (null: no cap)."""

    monthly_token_budget = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "accounts_user"


class WorkspaceQuerySet(models.QuerySet):
    def for_user(self, user: User | AnonymousUser, action: str = Action.VIEW) -> WorkspaceQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(memberships__user=user, memberships__role__in=roles_allowing(action)).distinct()


class Workspace(models.Model):
    """The unit of ownership: workflows, runs, credentials and collections all belong to one."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=120, unique=True)
    is_personal = models.BooleanField(default=False)
    default_max_concurrent_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runs of one workflow allowed at once when the workflow sets none."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """Gives a user a role in a workspace."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class WorkspaceScopedQuerySet(models.QuerySet):
    """QuerySet for models with a ``workspace`` field: ``for_user`` is the one visibility rule."""

    workspace_path = "workspace"

    def for_user(self, user: User | AnonymousUser, action: str = Action.VIEW) -> WorkspaceScopedQuerySet:
        if not getattr(user, "is_authenticated", False):
            return self.none()
        return self.filter(**{f"{self.workspace_path}__in": Workspace.objects.for_user(user, action).values("pk")})


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A named API token. Only its SHA-256 is stored; the token itself is shown once at creation."""

    PREFIX = "gw_"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_prefix = models.CharField(max_length=12, help_text="First characters of the token, to recognise it.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"

    @staticmethod
    def hash_key(key: str) -> str:
        # Tokens carry 256 bits of randomness, so a fast hash is enough: nothing to brute-force.
        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def generate_key(cls) -> str:
        return cls.PREFIX + secrets.token_urlsafe(32)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditLogQuerySet(WorkspaceScopedQuerySet):
    def for_user(self, user, action: str = Action.MANAGE):  # only owners read the audit log
        return super().for_user(user, action)


class AuditLog(models.Model):
    """Who did what, when. Never holds a secret: ``data`` carries names, ids and masks only."""

    workspace = models.ForeignKey(
        Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_entries"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)  # e.g. "workflow.published", "run.cancelled"
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = AuditLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.action} {self.target_repr}"


__all__ = ["ApiToken", "AuditLog", "Membership", "Role", "User", "Workspace", "WorkspaceScopedQuerySet"]
