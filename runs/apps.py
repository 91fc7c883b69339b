import contextlib

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_schedules(sender, using: str = "default", **kwargs) -> None:
    """After ``migrate`` (which ``make run`` does first) the q-cluster finds the reaper scheduled."""
    from django.db import DatabaseError

    from .tasks import ensure_schedules

    # DatabaseError: django_q's tables are not migrated yet (a partial migrate).
    with contextlib.suppress(DatabaseError):
        ensure_schedules()


class RunsConfig(AppConfig):
    name = "runs"

    def ready(self) -> None:
        post_migrate.connect(_ensure_schedules, sender=self, dispatch_uid="runs.ensure_schedules")
