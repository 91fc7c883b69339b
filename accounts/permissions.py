"""The one permission check used by services, pages and the API."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from .choices import ROLE_ACTIONS, Action
from .models import Membership, User, Workspace


def role_for(user: User, workspace: Workspace | int) -> str | None:
    if not getattr(user, "is_authenticated", False):
        return None
    workspace_id = workspace if isinstance(workspace, int) else workspace.pk
    return Membership.objects.filter(user=user, workspace_id=workspace_id).values_list("role", flat=True).first()


def can(user: User, workspace: Workspace | int, action: str) -> bool:
    """Whether ``user`` may do ``action`` in ``workspace``: their role grants it, or they are a superuser
    (the operators who run the server and use the admin; ``for_user`` still lists only their own workspaces)."""
    if getattr(user, "is_authenticated", False) and user.is_active and user.is_superuser:
        return True
    role = role_for(user, workspace)
    return role is not None and action in ROLE_ACTIONS[role]


def require(user: User | None, workspace: Workspace | int, action: str) -> None:
    """Raise ``PermissionDenied`` unless ``user`` may do ``action`` in ``workspace``.

    ``user=None`` means the system itself (a schedule, the reaper) and is always allowed.
    """
    if user is None:
        return
    if not can(user, workspace, action):
        raise PermissionDenied(f"You may not {Action(action).label.lower()} in this workspace.")
