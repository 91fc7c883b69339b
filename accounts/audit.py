"""Writing the audit log. Callers pass names, ids and masks, never secrets."""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import AuditLog, User, Workspace


def audit(
    *,
    action: str,
    actor: User | None = None,
    workspace: Workspace | int | None = None,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
    ip_address: str | None = None,
) -> AuditLog:
    entry = audit_entry(
        action=action, actor=actor, workspace=workspace, target=target, data=data, ip_address=ip_address
    )
    entry.save()
    return entry


def audit_entry(
    *,
    action: str,
    actor: User | None = None,
    workspace: Workspace | int | None = None,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
    ip_address: str | None = None,
) -> AuditLog:
    """The entry :func:`audit` writes, unsaved (for a caller that inserts many at once)."""
    from .middleware import current_ip

    workspace_id = workspace if isinstance(workspace, int) or workspace is None else workspace.pk
    if ip_address is None:
        ip_address = current_ip.get()
    return AuditLog(
        workspace_id=workspace_id,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        data=data or {},
        ip_address=ip_address,
    )
