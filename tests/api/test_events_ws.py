"""The WebSocket streams with a real client against the ASGI application.

Events are written the way the engine writes them (a numbered RunEvent row, pushed to the run's
group after commit), or only written to the table, as a worker process does with the in-process
layer: the consumer must deliver both, in order, with nothing lost or repeated across reconnects.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.db.models import Max

from accounts.services import api_token_create
from config.asgi import application
from runs.choices import RunStatus
from runs.events import run_group, workspace_group
from runs.models import Run, RunEvent
from runs.services import run_execute, run_start
from workflows.nodes import NodeType
from workflows.services import workflow_create, workflow_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def _emit(run_id: int, event_type: str, data: dict | None = None, *, push: bool = True) -> int:
    with transaction.atomic():
        last = RunEvent.objects.filter(run_id=run_id).aggregate(m=Max("seq"))["m"] or 0
        event = RunEvent.objects.create(run_id=run_id, seq=last + 1, type=event_type, data=data or {})
        if event_type.startswith("run.") and event_type.split(".", 1)[1] in RunStatus.values:
            Run.objects.filter(pk=run_id).update(status=event_type.split(".", 1)[1])
        if push:
            message = {"type": "run.event", "event": event.as_message()}
            transaction.on_commit(lambda: async_to_sync(get_channel_layer().group_send)(run_group(run_id), message))
    return event.seq


emit = sync_to_async(_emit)


@pytest.fixture
def run(workflow, user):
    version = workflow_publish(workflow=workflow, user=user)
    run = Run.objects.create(
        workspace=workflow.workspace, workflow=workflow, version=version, created_by=user, inputs={"text": "hi"}
    )
    _emit(run.pk, "run.queued")
    return run


@pytest.fixture
def token(user):
    return api_token_create(user=user, name="ws")[1]


def connect(path: str, token: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if token:
        headers.append((b"authorization", f"Token {token}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_until_closed(communicator: WebsocketCommunicator, timeout: float = 10) -> list[dict]:
    received = []
    while True:
        message = await communicator.receive_output(timeout=timeout)
        if message["type"] == "websocket.close":
            return received
        import json

        received.append(json.loads(message["text"]))


async def test_backlog_then_live_then_close_after_final_event(run, token):
    await emit(run.pk, "node.started", {"node": "first"})
    communicator = connect(f"/ws/runs/{run.pk}/", token)
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=5)
    second = await communicator.receive_json_from(timeout=5)
    assert [first["seq"], second["seq"]] == [1, 2]
    assert set(first) == {"seq", "type", "data", "created_at"}
    assert second == {**second, "type": "node.started", "data": {"node": "first"}}
    await emit(run.pk, "node.succeeded", {"node": "first"})
    await emit(run.pk, "run.succeeded", {"status": "succeeded"})
    rest = await receive_until_closed(communicator)
    assert [event["seq"] for event in rest] == [3, 4]
    assert rest[-1]["type"] == "run.succeeded"


async def test_events_written_only_to_the_table_still_arrive(run, token):
    """A worker process cannot reach the in-process layer: the consumer tails the table."""
    communicator = connect(f"/ws/runs/{run.pk}/?after=1", token)
    assert (await communicator.connect())[0]
    await emit(run.pk, "node.started", {"node": "first"}, push=False)
    await emit(run.pk, "run.failed", {"status": "failed"}, push=False)
    events = await receive_until_closed(communicator)
    assert [event["seq"] for event in events] == [2, 3]


async def test_reconnect_mid_run_with_after_loses_and_repeats_nothing(run, token):
    seen: list[int] = []
    communicator = connect(f"/ws/runs/{run.pk}/", token)
    assert (await communicator.connect())[0]
    for n in range(3):
        await emit(run.pk, "node.log", {"n": n})
    while len(seen) < 4:
        seen.append((await communicator.receive_json_from(timeout=5))["seq"])
    await communicator.disconnect()
    # While the client is away, the run goes on, pushed and unpushed alike.
    for n in range(3, 8):
        await emit(run.pk, "node.log", {"n": n}, push=n % 2 == 0)
    communicator = connect(f"/ws/runs/{run.pk}/?after={seen[-1]}", token)
    assert (await communicator.connect())[0]
    await asyncio.sleep(0)
    for n in range(8, 10):
        await emit(run.pk, "node.log", {"n": n})
    await emit(run.pk, "run.succeeded", {"status": "succeeded"})
    seen += [event["seq"] for event in await receive_until_closed(communicator)]
    total = await sync_to_async(RunEvent.objects.filter(run=run).count)()
    assert seen == list(range(1, total + 1))
    assert total == 12


async def test_finished_run_sends_its_history_and_closes(run, token):
    await emit(run.pk, "run.cancelled", {"status": "cancelled"})
    communicator = connect(f"/ws/runs/{run.pk}/", token)
    assert (await communicator.connect())[0]
    assert [event["type"] for event in await receive_until_closed(communicator)] == ["run.queued", "run.cancelled"]
    communicator = connect(f"/ws/runs/{run.pk}/?after=2", token)
    assert (await communicator.connect())[0]
    assert await receive_until_closed(communicator) == []


async def test_anonymous_and_other_users_are_refused(run, other_user):
    communicator = connect(f"/ws/runs/{run.pk}/")
    assert (await communicator.connect())[0]
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4401}
    other_token = await sync_to_async(lambda: api_token_create(user=other_user, name="x")[1])()
    communicator = connect(f"/ws/runs/{run.pk}/", other_token)
    assert (await communicator.connect())[0]
    closed = await communicator.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4404}


async def test_session_auth(run, user):
    from django.test import Client

    def session_cookie() -> bytes:
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    cookie = await sync_to_async(session_cookie)()
    communicator = WebsocketCommunicator(
        application,
        f"/ws/runs/{run.pk}/",
        headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)],
    )
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 1
    await communicator.disconnect()


async def test_user_feed_of_run_status_changes(run, token, other_user):
    communicator = connect("/ws/events/", token)
    assert (await communicator.connect())[0]
    layer = get_channel_layer()
    summary = {"id": run.pk, "status": "running", "workflow": run.workflow_id, "workspace": run.workspace_id}
    await layer.group_send(workspace_group(run.workspace_id), {"type": "run.status", "run": summary})
    message = await communicator.receive_json_from(timeout=5)
    assert message == {"type": "run.status", "run": summary}
    # A status change written by another process shows up through the table watch.
    await sync_to_async(lambda: Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED))()
    await sync_to_async(lambda: Run.objects.get(pk=run.pk).save(update_fields=["updated_at"]))()
    message = await communicator.receive_json_from(timeout=5)
    assert message["run"]["id"] == run.pk and message["run"]["status"] == "succeeded"
    await communicator.disconnect()

    other_token = await sync_to_async(lambda: api_token_create(user=other_user, name="x")[1])()
    other = connect("/ws/events/", other_token)
    assert (await other.connect())[0]
    await layer.group_send(workspace_group(run.workspace_id), {"type": "run.status", "run": summary})
    assert await other.receive_nothing(timeout=1.5)
    await other.disconnect()


class GateNode(NodeType):
    """Blocks until the test opens the gate (test-only), so a client can reconnect mid-run."""

    name = "api_gate"
    label = "Gate (API tests)"
    config_schema = {"type": "object", "properties": {}, "additionalProperties": False}
    opened = threading.Event()

    def execute(self, ctx) -> Any:
        if not self.opened.wait(timeout=20):
            raise RuntimeError("the test never opened the gate")
        return "through"


@pytest.fixture
def gated_run(user, workspace):
    from workflows.nodes import _registry, register

    _registry.pop(GateNode.name, None)
    register(GateNode)
    GateNode.opened.clear()
    definition = {
        "format": "graphwright/v1",
        "name": "Gated",
        "nodes": [
            {"id": "before", "type": "api_echo", "config": {"value": 1}},
            {"id": "gate", "type": "api_gate", "config": {}},
            {"id": "after", "type": "api_echo", "config": {"value": 2}},
        ],
        "edges": [{"source": "before", "target": "gate"}, {"source": "gate", "target": "after"}],
    }
    workflow = workflow_create(workspace=workspace, user=user, name="Gated", definition=definition)
    yield run_start(workflow=workflow, user=user, inputs={})
    GateNode.opened.set()


async def test_reconnect_during_a_real_engine_run(gated_run, token):
    """The engine executes in another thread (as a worker would); the client leaves and comes back."""
    seen: list[dict] = []
    communicator = connect(f"/ws/runs/{gated_run.pk}/", token)
    assert (await communicator.connect())[0]
    worker = threading.Thread(target=lambda: run_execute(run=Run.objects.get(pk=gated_run.pk)), daemon=True)
    worker.start()
    while not any(
        e["type"] == "node.started" and e["data"].get("node_id", e["data"].get("node")) == "gate" for e in seen
    ):
        seen.append(await communicator.receive_json_from(timeout=10))
    await communicator.disconnect()
    GateNode.opened.set()
    await sync_to_async(worker.join, thread_sensitive=False)(20)
    communicator = connect(f"/ws/runs/{gated_run.pk}/?after={seen[-1]['seq']}", token)
    assert (await communicator.connect())[0]
    seen += await receive_until_closed(communicator)
    stored = await sync_to_async(lambda: list(RunEvent.objects.filter(run=gated_run).values_list("seq", flat=True)))()
    assert [e["seq"] for e in seen] == sorted(stored) == list(range(1, len(stored) + 1))
    assert seen[-1]["type"] == "run.succeeded"


async def test_token_in_the_query_string_and_anonymous_feed(run, token):
    communicator = connect(f"/ws/runs/{run.pk}/?token={token}&after=0")
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from(timeout=5))["seq"] == 1
    await communicator.disconnect()
    feed = connect("/ws/events/")
    assert (await feed.connect())[0]
    assert await feed.receive_output(timeout=5) == {"type": "websocket.close", "code": 4401}
