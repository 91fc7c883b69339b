"""WebSocket consumers: one run's event stream, and a user's feed of run status changes.

``/ws/runs/{id}/?after=<seq>`` sends the stored events after ``seq``, then live ones, each
``{"seq", "type", "data", "created_at"}``, strictly in ``seq`` order with no gaps or repeats, and
closes after the run's final event. Live events arrive on the run's channel-layer group; the
consumer also tails the RunEvent table, which is the only way events written by a worker process
reach it when the channel layer is in-process, and which fills any gap a lost message leaves.

``/ws/events/`` pushes ``{"type": "run.status", "run": {...}}`` for runs in the user's workspaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from .choices import RUN_FINAL
from .events import run_group, workspace_group
from .models import Run, RunEvent

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
BACKLOG_BATCH = 500
FINAL_EVENT_TYPES = frozenset({f"run.{status}" for status in RUN_FINAL} | {"run.finished", "run.completed"})


def layer_is_in_process() -> bool:
    backend = settings.CHANNEL_LAYERS.get("default", {}).get("BACKEND", "")
    return backend.endswith("InMemoryChannelLayer")


def tail_interval() -> float:
    """Seconds between table polls: fast with the in-process layer, a slow safety net otherwise."""
    configured = getattr(settings, "GW_EVENTS_TAIL_SECONDS", None)
    if configured is not None:
        return float(configured)
    return 0.2 if layer_is_in_process() else 2.0


def is_final_event(event: dict[str, Any]) -> bool:
    event_type = event.get("type", "")
    if event_type in FINAL_EVENT_TYPES:
        return True
    data = event.get("data") or {}
    return event_type.startswith("run.") and isinstance(data, dict) and data.get("status") in RUN_FINAL


def _as_message(event: dict[str, Any]) -> dict[str, Any]:
    created_at = event.get("created_at")
    if hasattr(created_at, "isoformat"):
        created_at = created_at.isoformat()
    return {"seq": event["seq"], "type": event["type"], "data": event.get("data") or {}, "created_at": created_at}


def _query_after(query_string: bytes) -> int:
    raw = (parse_qs(query_string.decode(errors="replace")).get("after") or ["0"])[0]
    try:
        return max(int(raw), 0)
    except ValueError:
        return 0


@database_sync_to_async
def _visible_run(user, run_id: int) -> Run | None:
    return Run.objects.for_user(user).filter(pk=run_id).only("pk", "status", "workspace_id").first()


@database_sync_to_async
def _events_after(run_id: int, after: int) -> tuple[bool, list[dict[str, Any]]]:
    # Status first: the final event commits with the final status, so a finished run read here
    # has every one of its events visible to the query that follows.
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    events = [
        event.as_message()
        for event in RunEvent.objects.filter(run_id=run_id, seq__gt=after).order_by("seq")[:BACKLOG_BATCH]
    ]
    return (status is None or status in RUN_FINAL), events


class RunEventsConsumer(AsyncJsonWebsocketConsumer):
    """The event stream of one run (see the module docstring)."""

    async def connect(self) -> None:
        self.closed = False
        self.tail_task: asyncio.Task | None = None
        self.group: str | None = None
        self.lock = asyncio.Lock()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.accept()  # accepted, then closed with a code the client can read
            await self._close(CLOSE_UNAUTHENTICATED)
            return
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        run = await _visible_run(user, self.run_id)
        if run is None:
            await self.accept()
            await self._close(CLOSE_NOT_FOUND)
            return
        self.last_seq = _query_after(self.scope.get("query_string", b""))
        self.group = run_group(self.run_id)
        # Join before reading the backlog, so an event committed in between is either read or received.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        async with self.lock:
            await self._catch_up()
        if not self.closed:
            self.tail_task = asyncio.create_task(self._tail())

    async def _close(self, code: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        await self.close(code=code)

    async def _send_event(self, event: dict[str, Any]) -> None:
        await self.send_json(_as_message(event))
        self.last_seq = event["seq"]
        if is_final_event(event):
            await self._close()

    async def _catch_up(self) -> None:
        """Send every stored event after ``last_seq`` (caller holds the lock)."""
        while not self.closed:
            finished, events = await _events_after(self.run_id, self.last_seq)
            for event in events:
                await self._send_event(event)
                if self.closed:
                    return
            if len(events) < BACKLOG_BATCH:
                if finished:
                    await self._close()
                return

    async def _tail(self) -> None:
        interval = tail_interval()
        try:
            while not self.closed:
                await asyncio.sleep(interval)
                async with self.lock:
                    await self._catch_up()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Tailing events of run %s failed", getattr(self, "run_id", None))

    async def run_event(self, message: dict[str, Any]) -> None:
        """A live event from the run's group: send it when it is the next one, else fill from the table."""
        event = message.get("event") or {}
        async with self.lock:
            if self.closed or "seq" not in event or event["seq"] <= self.last_seq:
                return
            if event["seq"] == self.last_seq + 1:
                await self._send_event(event)
            else:
                await self._catch_up()

    async def run_status(self, message: dict[str, Any]) -> None:
        """Status messages go to the workspace feed; the run stream has its own events."""

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.tail_task is not None:
            self.tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.tail_task
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)


@database_sync_to_async
def _workspace_ids(user) -> list[int]:
    from accounts.models import Workspace

    return list(Workspace.objects.for_user(user).values_list("pk", flat=True))


@database_sync_to_async
def _changed_runs(workspace_ids: list[int], since) -> list[tuple[Any, dict[str, Any]]]:
    """``(updated_at, run summary)`` for runs changed after ``since``, as the engine pushes them."""
    from .events import run_status_message

    runs = Run.objects.filter(workspace_id__in=workspace_ids, updated_at__gt=since).order_by("updated_at")[:200]
    return [(run.updated_at, run_status_message(run)["run"]) for run in runs]


class UserEventsConsumer(AsyncJsonWebsocketConsumer):
    """The signed-in user's feed of run status changes across their workspaces."""

    async def connect(self) -> None:
        self.closed = False
        self.groups_joined: list[str] = []
        self.tail_task: asyncio.Task | None = None
        self.sent_status: dict[int, str] = {}
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.closed = True
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.workspace_ids = await _workspace_ids(user)
        for workspace_id in self.workspace_ids:
            group = workspace_group(workspace_id)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        # Watch the table too: with the in-process layer a worker process cannot reach this one,
        # and with any layer a lost message is caught up with.
        self.since = timezone.now()
        self.tail_task = asyncio.create_task(self._tail())

    async def _push(self, run: dict[str, Any]) -> None:
        run_id, status = run.get("id"), run.get("status")
        if run_id is not None and self.sent_status.get(run_id) == status:
            return
        if run_id is not None:
            self.sent_status[run_id] = status
        await self.send_json({"type": "run.status", "run": run})

    async def _tail(self) -> None:
        interval = max(tail_interval(), 0.5)
        try:
            while not self.closed:
                await asyncio.sleep(interval)
                for updated_at, summary in await _changed_runs(self.workspace_ids, self.since):
                    self.since = max(self.since, updated_at)
                    await self._push(summary)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Tailing run status changes failed")

    async def run_status(self, message: dict[str, Any]) -> None:
        run = message.get("run") or {}
        if run.get("workspace") not in (None, *self.workspace_ids):
            return
        await self._push(run)

    async def run_event(self, message: dict[str, Any]) -> None:
        """Per-run events are not part of this feed."""

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.tail_task is not None:
            self.tail_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.tail_task
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
