"""django-q2 task functions: thin wrappers that load a row by id and call the engine or a service."""

from __future__ import annotations

import contextlib
import logging
import traceback
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from . import engine
from .choices import IllegalTransition, NodeRunStatus, RunStatus
from .models import NodeRun, Run

logger = logging.getLogger(__name__)

REAPER_SCHEDULE_NAME = "graphwright: reap runs"


def execute_run(run_id: int) -> str:
    """Execute one run. A crash of the engine itself is recorded on the run, never lost.

    A fresh run made only of inline nodes takes along up to ``GW_RUN_CHUNK - 1`` other such runs
    still queued (a backlog under load), executed as one chunk (``engine.execute_runs``)."""
    close_old_connections()
    try:
        run = engine.execute_runs([run_id], backlog=settings.GW_RUN_CHUNK - 1)[0]
    except Exception:
        logger.exception("Run %s: the task failed", run_id)
        close_old_connections()
        run = Run.objects.filter(pk=run_id).first()
        if run is not None and not run.is_finished:
            with contextlib.suppress(IllegalTransition):
                engine.finish_run(run, RunStatus.FAILED, error="Engine crashed:\n" + traceback.format_exc()[-4000:])
        raise
    return f"run {run_id}: {run.status if run else 'nothing to do'}"


def execute_runs(run_ids: list[int]) -> str:
    """Execute a chunk of runs started together (``run_start_many``)."""
    close_old_connections()
    try:
        runs = engine.execute_runs(run_ids)
    except Exception:
        logger.exception("Runs %s: the task failed", run_ids)
        raise
    done = sum(1 for run in runs if run is not None and run.is_finished)
    return f"runs {run_ids[0]}..{run_ids[-1]}: {done} of {len(run_ids)} finished"


def reap_runs(*, queued_after_seconds: float = 30.0) -> dict[str, int]:
    """Re-enqueue runs whose worker died (lease expired), queued runs whose message may have been
    lost, and parked runs whose approval timed out. Safe to repeat: the lease decides who executes."""
    now = timezone.now()
    expired = list(Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__lt=now).values_list("pk", flat=True))
    expired += list(
        Run.objects.filter(status=RunStatus.RUNNING, lease_expires_at__isnull=True).values_list("pk", flat=True)
    )
    stale_queued = list(
        Run.objects.filter(
            status=RunStatus.QUEUED, created_at__lt=now - timedelta(seconds=queued_after_seconds)
        ).values_list("pk", flat=True)[:500]
    )
    from .services import approval_expire

    timed_out = []
    for node_run in NodeRun.objects.filter(status=NodeRunStatus.WAITING, run__status=RunStatus.WAITING):
        if approval_expire(node_run=node_run, now=now):
            timed_out.append(node_run.run_id)
    for run_id in dict.fromkeys(expired + stale_queued + timed_out):
        engine.enqueue(run_id)
    return {"expired": len(expired), "queued": len(stale_queued), "approvals_timed_out": len(timed_out)}


def ensure_schedules() -> None:
    """Create (or update) the reaper's django-q2 Schedule. Idempotent."""
    from django_q.models import Schedule

    minutes = max(1, settings.GW_REAPER_MINUTES)
    schedule = Schedule.objects.filter(name=REAPER_SCHEDULE_NAME).first()
    if schedule is None:
        Schedule.objects.create(
            name=REAPER_SCHEDULE_NAME,
            func="runs.tasks.reap_runs",
            schedule_type=Schedule.MINUTES,
            minutes=minutes,
            repeats=-1,
        )
    elif schedule.minutes != minutes or schedule.func != "runs.tasks.reap_runs":
        schedule.minutes, schedule.func, schedule.schedule_type = minutes, "runs.tasks.reap_runs", Schedule.MINUTES
        schedule.save()
