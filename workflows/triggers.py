"""Trigger services: webhook and schedule triggers, and firing them.

A schedule trigger owns a django-q2 ``Schedule`` (cron) whose func is :func:`fire_schedule`; the
Schedule exists only while the trigger is active, and is removed with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from croniter import croniter
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.audit import audit
from accounts.choices import Action
from accounts.models import User
from accounts.permissions import require

from .choices import TriggerKind
from .models import Trigger, Workflow

SCHEDULE_FUNC = "workflows.triggers.fire_schedule"


def _clean(*, kind: str, cron: str, inputs: Any) -> str:
    if kind not in TriggerKind.values:
        raise ValidationError({"kind": [f"Choose one of {', '.join(TriggerKind.values)}."]})
    if not isinstance(inputs, dict):
        raise ValidationError({"inputs": ["Expected a JSON object."]})
    cron = " ".join((cron or "").split())
    if kind == TriggerKind.SCHEDULE:
        if not cron:
            raise ValidationError({"cron": ["A schedule trigger needs a cron expression, e.g. '*/5 * * * *'."]})
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValidationError(
                {"cron": [f"{cron!r} is not a valid cron expression (five fields: minute hour day month weekday)."]}
            )
    elif cron:
        raise ValidationError({"cron": ["Only schedule triggers take a cron expression."]})
    return cron


def next_fire_time(cron: str, after: datetime | None = None) -> datetime:
    return croniter(cron, after or timezone.now()).get_next(datetime)


def _sync_schedule(trigger: Trigger) -> None:
    """Create, update or remove the trigger's django-q2 Schedule to match it."""
    from django_q.models import Schedule

    wanted = trigger.kind == TriggerKind.SCHEDULE and trigger.is_active
    schedule = trigger.schedule if trigger.schedule_id else None
    if not wanted:
        if schedule is not None:
            trigger.schedule = None
            trigger.save(update_fields=["schedule", "updated_at"])
            schedule.delete()
        return
    if schedule is None:
        schedule = Schedule(func=SCHEDULE_FUNC, name=f"graphwright-trigger-{trigger.pk}", repeats=-1)
    schedule.args = repr(trigger.pk)
    schedule.schedule_type = Schedule.CRON
    schedule.cron = trigger.cron
    schedule.next_run = next_fire_time(trigger.cron)
    schedule.save()
    if trigger.schedule_id != schedule.pk:
        trigger.schedule = schedule
        trigger.save(update_fields=["schedule", "updated_at"])


@transaction.atomic
def trigger_create(
    *,
    workflow: Workflow,
    user: User | None,
    kind: str,
    cron: str = "",
    inputs: dict[str, Any] | None = None,
    respond_with_result: bool = False,
    is_active: bool = True,
) -> Trigger:
    require(user, workflow.workspace_id, Action.EDIT)
    inputs = {} if inputs is None else inputs
    cron = _clean(kind=kind, cron=cron, inputs=inputs)
    trigger = Trigger.objects.create(
        workflow=workflow,
        kind=kind,
        cron=cron,
        inputs=inputs,
        respond_with_result=respond_with_result,
        is_active=is_active,
        created_by=user,
    )
    _sync_schedule(trigger)
    audit(
        action="trigger.created",
        actor=user,
        workspace=workflow.workspace_id,
        target=trigger,
        data={"kind": kind, "cron": cron, "workflow": workflow.pk},
    )
    return trigger


@transaction.atomic
def trigger_update(*, trigger: Trigger, user: User | None, **fields: Any) -> Trigger:
    require(user, trigger.workflow.workspace_id, Action.EDIT)
    allowed = {"cron", "inputs", "respond_with_result", "is_active"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({name: ["This field cannot be changed."] for name in sorted(unknown)})
    trigger = Trigger.objects.select_for_update().get(pk=trigger.pk)
    cron = _clean(kind=trigger.kind, cron=fields.get("cron", trigger.cron), inputs=fields.get("inputs", trigger.inputs))
    changed = sorted(name for name, value in fields.items() if getattr(trigger, name) != value)
    for name, value in fields.items():
        setattr(trigger, name, value)
    trigger.cron = cron
    trigger.save()
    _sync_schedule(trigger)
    audit(
        action="trigger.updated",
        actor=user,
        workspace=trigger.workflow.workspace_id,
        target=trigger,
        data={"changed": changed},
    )
    return trigger


@transaction.atomic
def trigger_delete(*, trigger: Trigger, user: User | None) -> None:
    require(user, trigger.workflow.workspace_id, Action.EDIT)
    schedule = trigger.schedule if trigger.schedule_id else None
    audit(
        action="trigger.deleted",
        actor=user,
        workspace=trigger.workflow.workspace_id,
        target=trigger,
        data={"kind": trigger.kind, "workflow": trigger.workflow_id},
    )
    trigger.delete()
    if schedule is not None:
        schedule.delete()


class TriggerInactive(Exception):
    """The trigger or its workflow is switched off (or archived); nothing was started."""


def trigger_fire(*, trigger: Trigger, inputs: dict[str, Any] | None = None, mode: str = "async"):
    """Start the trigger's workflow: its stored inputs overlaid with ``inputs``. Returns the Run."""
    from runs.services import run_start

    workflow = trigger.workflow
    if not trigger.is_active:
        raise TriggerInactive("This trigger is inactive.")
    if not workflow.is_active or workflow.is_archived:
        raise TriggerInactive("The workflow of this trigger is inactive.")
    run = run_start(
        workflow=workflow,
        user=None,
        inputs={**(trigger.inputs or {}), **(inputs or {})},
        trigger=trigger.kind,
        mode=mode,
    )
    Trigger.objects.filter(pk=trigger.pk).update(last_fired_at=timezone.now())
    return run


def fire_schedule(trigger_id: int) -> int | None:
    """The django-q2 Schedule func: start the run of a schedule trigger. Returns the run id."""
    trigger = Trigger.objects.select_related("workflow").filter(pk=trigger_id, kind=TriggerKind.SCHEDULE).first()
    if trigger is None:
        return None
    try:
        run = trigger_fire(trigger=trigger)
    except TriggerInactive:
        return None
    return run.pk
