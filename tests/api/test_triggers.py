"""Triggers: CRUD through the API, cron validation, django-q2 schedules, webhooks firing real runs."""

from __future__ import annotations

import pytest
from django_q.models import Schedule
from rest_framework.test import APIClient

from accounts.choices import Role
from runs.models import Run
from workflows.models import Trigger
from workflows.triggers import fire_schedule, trigger_create

from .conftest import assert_error

pytestmark = pytest.mark.django_db(transaction=True)  # webhooks may execute runs (engine threads)


def create(client, workflow, **body):
    return client.post(f"/api/v1/workflows/{workflow.pk}/triggers/", body, format="json")


def test_webhook_trigger_has_a_url(api_client, workflow):
    response = create(api_client, workflow, kind="webhook", inputs={"text": "default"})
    assert response.status_code == 201, response.json()
    body = response.json()
    trigger = Trigger.objects.get(pk=body["id"])
    assert body["url"].endswith(f"/hooks/{trigger.token}/")
    assert body["workflow"] == workflow.pk and body["next_run_at"] is None
    listed = api_client.get(f"/api/v1/workflows/{workflow.pk}/triggers/").json()
    assert [t["id"] for t in listed["results"]] == [trigger.pk]


def test_schedule_trigger_owns_a_django_q_schedule(api_client, workflow):
    response = create(api_client, workflow, kind="schedule", cron="*/5 * * * *")
    assert response.status_code == 201, response.json()
    trigger = Trigger.objects.get(pk=response.json()["id"])
    schedule = trigger.schedule
    assert schedule.func == "workflows.triggers.fire_schedule"
    assert schedule.schedule_type == Schedule.CRON and schedule.cron == "*/5 * * * *"
    assert response.json()["next_run_at"] is not None and response.json()["url"] is None

    url = f"/api/v1/triggers/{trigger.pk}/"
    assert api_client.patch(url, {"cron": "0 3 * * 1"}, format="json").status_code == 200
    schedule.refresh_from_db()
    assert schedule.cron == "0 3 * * 1"
    # Inactive: no schedule; active again: a new one.
    assert api_client.patch(url, {"is_active": False}, format="json").json()["next_run_at"] is None
    assert not Schedule.objects.filter(pk=schedule.pk).exists()
    assert api_client.patch(url, {"is_active": True}, format="json").json()["next_run_at"] is not None
    trigger.refresh_from_db()
    assert trigger.schedule is not None
    assert api_client.delete(url).status_code == 204
    assert not Trigger.objects.filter(pk=trigger.pk).exists()
    assert Schedule.objects.filter(func="workflows.triggers.fire_schedule").count() == 0


def test_bad_cron_is_a_clear_field_error(api_client, workflow):
    error = assert_error(create(api_client, workflow, kind="schedule", cron="every monday"), 400, "invalid")
    assert "cron" in error["fields"] and "cron expression" in error["fields"]["cron"][0]
    error = assert_error(create(api_client, workflow, kind="schedule"), 400)
    assert "cron" in error["fields"]
    assert_error(create(api_client, workflow, kind="webhook", cron="* * * * *"), 400)
    assert_error(create(api_client, workflow, kind="carrier-pigeon"), 400)
    assert Trigger.objects.count() == 0
    assert not Schedule.objects.filter(func="workflows.triggers.fire_schedule").exists()


def test_schedule_fires_a_real_run(workflow, user):
    trigger = trigger_create(workflow=workflow, user=user, kind="schedule", cron="* * * * *", inputs={"text": "tick"})
    schedule = trigger.schedule
    # What django-q2's scheduler does when the schedule is due: call its func with its args.
    import ast
    from pydoc import locate

    from django_q.tasks import async_task  # noqa: F401  (the scheduler enqueues func(*args))

    func = locate(schedule.func)
    run_id = func(*[ast.literal_eval(schedule.args)])
    run = Run.objects.get(pk=run_id)
    assert run.trigger == "schedule" and run.inputs == {"text": "tick"} and run.status == "queued"
    trigger.refresh_from_db()
    assert trigger.last_fired_at is not None
    trigger.is_active = False
    trigger.save()
    assert fire_schedule(trigger.pk) is None


def test_django_q_scheduler_enqueues_the_due_schedule(workflow, user, settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.brokers import get_broker
    from django_q.cluster import scheduler

    trigger = trigger_create(workflow=workflow, user=user, kind="schedule", cron="* * * * *", inputs={"text": "q"})
    Schedule.objects.filter(pk=trigger.schedule_id).update(next_run=timezone.now() - timedelta(seconds=1))
    broker = get_broker()
    broker.purge_queue()
    scheduler(broker=broker)
    # The scheduler put the task on the queue; run it as a worker would.
    from django_q.signing import SignedPackage

    queued = []
    while package := broker.dequeue():
        queued += [SignedPackage.loads(payload) for _ack_id, payload in package]
    fired = [task for task in queued if task["func"] == "workflows.triggers.fire_schedule"]
    assert len(fired) == 1, [task["func"] for task in queued]
    task = fired[0]
    assert task["args"] == (trigger.pk,)
    from pydoc import locate

    run_id = locate(task["func"])(*task["args"])
    assert Run.objects.get(pk=run_id).trigger == "schedule"
    broker.purge_queue()


def test_webhook_starts_a_run_with_the_body_as_inputs(api_client, workflow):
    body = create(api_client, workflow, kind="webhook").json()
    response = APIClient().post(body["url"], {"text": "from outside"}, format="json")
    assert response.status_code == 202, response.json()
    run = Run.objects.get(pk=response.json()["run_id"])
    assert run.trigger == "webhook" and run.inputs == {"text": "from outside"} and run.created_by is None


def test_webhook_responds_with_the_result_when_asked(api_client, workflow):
    body = create(api_client, workflow, kind="webhook", respond_with_result=True).json()
    response = APIClient().post(body["url"], {"text": "sync"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "succeeded"
    assert Run.objects.get(pk=response.json()["run_id"]).status == "succeeded"


def test_webhook_errors(api_client, workflow):
    body = create(api_client, workflow, kind="webhook").json()
    anonymous = APIClient()
    assert_error(anonymous.post("/hooks/not-a-token/", {}, format="json"), 404, "not_found")
    assert_error(anonymous.post(body["url"], [1, 2], format="json"), 400)
    assert_error(anonymous.post(body["url"], {"nope": 1}, format="json"), 400)
    api_client.patch(f"/api/v1/triggers/{body['id']}/", {"is_active": False}, format="json")
    error = assert_error(anonymous.post(body["url"], {"text": "x"}, format="json"), 409, "inactive")
    assert "trigger" in error["message"]
    api_client.patch(f"/api/v1/triggers/{body['id']}/", {"is_active": True}, format="json")
    api_client.patch(f"/api/v1/workflows/{workflow.pk}/", {"is_active": False}, format="json")
    error = assert_error(anonymous.post(body["url"], {"text": "x"}, format="json"), 409, "inactive")
    assert "workflow" in error["message"]
    assert Run.objects.count() == 0


def test_webhook_is_throttled(api_client, workflow, settings):
    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], hooks="2/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    body = create(api_client, workflow, kind="webhook").json()
    codes = [APIClient().post(body["url"], {"text": "x"}, format="json").status_code for _ in range(3)]
    assert codes == [202, 202, 429]


def test_trigger_access(api_client, other_api_client, member_client, workflow):
    body = create(api_client, workflow, kind="webhook").json()
    url = f"/api/v1/triggers/{body['id']}/"
    assert_error(other_api_client.get(url), 404)
    assert_error(other_api_client.patch(url, {"is_active": False}, format="json"), 404)
    assert_error(other_api_client.delete(url), 404)
    assert_error(create(other_api_client, workflow, kind="webhook"), 404)
    _viewer, viewer = member_client(Role.VIEWER)
    assert viewer.get(url).status_code == 200
    assert_error(viewer.patch(url, {"is_active": False}, format="json"), 403)
    assert_error(create(viewer, workflow, kind="webhook"), 403)
    assert Trigger.objects.get(pk=body["id"]).is_active
