"""Completion callbacks: POST a finished run to its ``callback_url``.

The engine calls :func:`enqueue_run_callback` once, on commit, when a run with a callback URL ends.
Delivery goes through the SSRF guard (``providers.ssrf``) and is retried with exponential backoff
through django-q2 schedules; each attempt is logged on the run as a ``callback.*`` note in the
audit log, never with the payload's secrets (there are none: outputs only).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

DELIVER_FUNC = "runs.callbacks.deliver_run_callback"


def max_attempts() -> int:
    return int(getattr(settings, "GW_CALLBACK_MAX_ATTEMPTS", 5))


def backoff_seconds(attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: 10 s, 20 s, 40 s … capped at 10 minutes."""
    base = float(getattr(settings, "GW_CALLBACK_BACKOFF_SECONDS", 10))
    return min(base * (2 ** (attempt - 1)), 600.0)


def enqueue_run_callback(run_id: int) -> None:
    """Schedule the callback POST for a finished run."""
    from django_q.tasks import async_task

    async_task(DELIVER_FUNC, run_id, 1, task_name=f"run-callback-{run_id}-1")


def callback_payload(run) -> dict[str, Any]:
    return {
        "run_id": run.pk,
        "workflow_id": run.workflow_id,
        "workspace_id": run.workspace_id,
        "status": run.status,
        "trigger": run.trigger,
        "outputs": run.outputs,
        "error": run.error,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "url": f"{settings.SITE_URL}/api/v1/runs/{run.pk}/",
    }


def _post(url: str, payload: dict[str, Any]) -> int:
    """POST through the SSRF guard; returns the status code. Raises on a refused or failed request."""
    from providers.ssrf import guarded_client

    body = json.dumps(payload, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "Graphwright-Callback/1"}
    with guarded_client(timeout=10.0, follow_redirects=False) as client:
        return client.post(url, content=body, headers=headers).status_code


def deliver_run_callback(run_id: int, attempt: int = 1) -> str:
    """One delivery attempt. Schedules the next one with backoff on a failure, up to the limit."""
    from accounts.audit import audit

    from .models import Run

    run = Run.objects.filter(pk=run_id).first()
    if run is None or not run.callback_url or not run.is_finished:
        return "skipped"
    try:
        code = _post(run.callback_url, callback_payload(run))
        outcome, ok = f"HTTP {code}", 200 <= code < 300
        retryable = code >= 500 or code in (408, 429)
    except Exception as exc:  # refused by the guard, unreachable, timed out
        from providers.ssrf import unwrap_blocked

        blocked = unwrap_blocked(exc)
        outcome, ok = (str(blocked) if blocked else f"{type(exc).__name__}: {exc}")[:300], False
        retryable = blocked is None  # a refused destination stays refused
    if ok:
        audit(action="run.callback_sent", workspace=run.workspace_id, target=run, data={"attempt": attempt})
        return "sent"
    logger.warning("Callback for run %s failed (attempt %s): %s", run_id, attempt, outcome)
    if retryable and attempt < max_attempts():
        _schedule_retry(run_id, attempt + 1)
        return "retrying"
    audit(
        action="run.callback_failed",
        workspace=run.workspace_id,
        target=run,
        data={"attempt": attempt, "reason": outcome},
    )
    return "failed"


def _schedule_retry(run_id: int, attempt: int) -> None:
    from django_q.models import Schedule

    Schedule.objects.create(
        func=DELIVER_FUNC,
        args=f"{run_id}, {attempt}",
        name=f"run-callback-{run_id}-{attempt}",
        schedule_type=Schedule.ONCE,
        repeats=1,
        next_run=timezone.now() + timedelta(seconds=backoff_seconds(attempt - 1)),
    )
