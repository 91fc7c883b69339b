"""Run events: stored, numbered per run, pushed to channel-layer groups after commit.

Groups (issue 6's consumers listen on them):
- ``run_group(run_id)``: every event of one run, message ``{"type": "run.event", "event": {...}}``.
- ``workspace_group(workspace_id)``: run status changes, message ``{"type": "run.status", "run": {...}}``.

This module is the one place that changes a Run or NodeRun status: :func:`transition_run` and
:func:`transition_node` check the transition table and write the new status and its RunEvent in one
transaction with the run row locked. ``seq`` comes from ``Run.event_seq``, incremented by an
``UPDATE … RETURNING`` that also takes the row lock, so numbers are unique and gap-free per run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import threading
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.utils import timezone

from .choices import NODE_FINAL, NODE_TRANSITIONS, RUN_FINAL, RUN_TRANSITIONS, IllegalTransition, NodeRunStatus
from .models import NodeRun, Run, RunEvent

logger = logging.getLogger(__name__)

# Outputs larger than this are left out of node.succeeded events (the NodeRun row has them).
EVENT_OUTPUT_MAX_BYTES = 4096


def run_group(run_id: int) -> str:
    return f"run-{run_id}"


def workspace_group(workspace_id: int) -> str:
    return f"workspace-{workspace_id}"


class RunFinished(IllegalTransition):
    """A node transition was refused because its run already ended (cancelled, failed, succeeded)."""

    def __init__(self, run_status: str, new: str):
        super().__init__("node", f"run {run_status}", new)
        self.run_status = run_status


# -- deferred writes --------------------------------------------------------------------------------
class Deferred:
    """The writes of one run held back until the end of the transaction that locked its row.

    The engine opens one around its first transaction (taking the lease, then the first step):
    while this thread holds the run row's lock, the status changes and events of that run are
    checked and numbered here in memory, and :meth:`flush` writes them before the commit: new
    NodeRuns in one insert, events in one insert, the run in one update. A one-node run then costs a
    handful of statements instead of a dozen, and nobody can observe the difference: the row lock
    (SELECT … FOR UPDATE; SQLite's IMMEDIATE transaction) keeps every other writer out until commit,
    and a reader sees the same final rows either way. Thread-local: another thread that writes an
    event of the run (none does during the first step) waits for the lock and numbers after flush."""

    _local = threading.local()

    def __init__(self, batch: Batch | None = None) -> None:
        self.batch = batch  # several runs' writes go out together at the end of the batch
        self.run: Run | None = None
        self.seq = 0
        self.run_fields: set[str] = set()
        self.node_runs: list[NodeRun] = []  # created in this transaction, inserted at flush
        self.artifacts: list[Any] = []  # Artifacts whose file is written and whose row nobody needs yet
        self.events: list[tuple[RunEvent, dict[str, Any] | None]] = []

    @classmethod
    def active(cls, run_id: int) -> Deferred | None:
        buffer = getattr(cls._local, "buffer", None)
        if buffer is not None and buffer.run is not None and buffer.run.pk == run_id:
            return buffer
        return None

    def __enter__(self) -> Deferred:
        if getattr(self._local, "buffer", None) is not None:
            raise RuntimeError("Deferred writes do not nest.")
        if not connection.in_atomic_block:
            raise transaction.TransactionManagementError("Deferred writes need the caller's transaction.")
        self._local.buffer = self
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._local.buffer = None
        if exc_type is None:
            self.flush()

    def attach(self, run: Run) -> None:
        """Take over ``run``, whose row the current transaction has just locked (and read)."""
        self.run, self.seq = run, run.event_seq

    def add_node_runs(self, node_runs: list[NodeRun]) -> None:
        self.node_runs.extend(node_runs)

    def add_artifact(self, artifact: Any) -> None:
        """Insert ``artifact`` (its file already written) at the flush: for ``result.json``,
        which nothing refers to by id."""
        self.artifacts.append(artifact)

    def save_node_runs(self) -> None:
        """Insert the NodeRuns created so far, as they stand (something needs their primary keys)."""
        if self.node_runs:
            _insert_node_runs(self.node_runs)
            self.node_runs = []

    def allocate(self, count: int = 1) -> tuple[int, str]:
        self.seq += count
        return self.seq, self.run.status

    def add_event(
        self, run_id: int, seq: int, event_type: str, data: dict[str, Any], status_run: Run | None = None
    ) -> RunEvent:
        event = RunEvent(run_id=run_id, seq=seq, type=event_type, data=data, created_at=timezone.now())
        # The run's status as of this event (the row changes again before the flush).
        self.events.append((event, run_status_message(status_run) if status_run is not None else None))
        return event

    def flush(self) -> None:
        if self.run is None:
            return
        batch = self.batch if self.batch is not None else Batch()
        batch.node_runs += self.node_runs
        batch.artifacts += self.artifacts
        self.node_runs, self.artifacts = [], []
        if self.seq != self.run.event_seq or self.run_fields:
            self.run.event_seq = self.seq
            batch.runs.append((self.run, self.run_fields | {"event_seq", "updated_at"}))
            self.run_fields = set()
        for event, status in self.events:
            batch.events.append(event)
            batch.messages.append((run_group(event.run_id), {"type": "run.event", "event": event.as_message()}))
            if status is not None:
                batch.messages.append((workspace_group(self.run.workspace_id), status))
        self.events = []
        if self.batch is None:
            batch.write()


class Batch:
    """The deferred writes of several runs executed together (``engine.execute_runs``), written
    by :meth:`write` in one statement per table before the shared transaction commits."""

    def __init__(self) -> None:
        self.node_runs: list[NodeRun] = []
        self.artifacts: list[Any] = []
        self.runs: list[tuple[Run, set[str]]] = []
        self.events: list[RunEvent] = []
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def write(self) -> None:
        if self.node_runs:
            _insert_node_runs(self.node_runs)
        if self.artifacts:
            from .models import Artifact

            Artifact.objects.bulk_create(self.artifacts)
        if len(self.runs) == 1:
            run, fields = self.runs[0]
            run.save(update_fields=sorted(fields))
        elif self.runs:
            _update_runs(self.runs)
        if self.events:
            RunEvent.objects.bulk_create(self.events)
        if self.messages:
            messages = self.messages
            transaction.on_commit(lambda: _push(messages))


def _update_runs(runs: list[tuple[Run, set[str]]]) -> None:
    """Write the changed fields of several runs with one statement executed for many rows (psycopg
    pipelines it; Django's ``bulk_update`` would build a CASE per field and row, at a far higher
    CPU cost). Every row is locked by this transaction and current in memory, so writing the union
    of the changed fields writes nothing stale."""
    now = timezone.now()
    names = sorted(set().union(*(changed for _, changed in runs)) - {"updated_at"})
    fields = [Run._meta.get_field(name) for name in names] + [Run._meta.get_field("updated_at")]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(Run._meta.db_table)} SET {assignments} WHERE {quote('id')} = %s"  # noqa: S608
    rows = []
    for run, _ in runs:
        run.updated_at = now
        rows.append([field.get_db_prep_save(getattr(run, field.attname), connection) for field in fields] + [run.pk])
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _insert_node_runs(node_runs: list[NodeRun]) -> None:
    created = NodeRun.objects.bulk_create(node_runs)
    if not all(node_run.pk for node_run in created):  # a backend that cannot return ids from a bulk insert
        rows = NodeRun.objects.filter(run_id__in={n.run_id for n in node_runs}).values_list("run_id", "node_id", "pk")
        ids = {(run_id, node_id): pk for run_id, node_id, pk in rows}
        for node_run in node_runs:
            node_run.pk = ids[(node_run.run_id, node_run.node_id)]
    for node_run in node_runs:
        node_run._state.adding = False


# -- pushing ----------------------------------------------------------------------------------------
class _Publisher:
    """One daemon thread per process with its own event loop sends to a cross-process channel layer
    (Redis), so a run never waits on the network for an event; a single queue keeps the order."""

    _instance: _Publisher | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="run-events-publisher", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> _Publisher:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():  # a forked worker starts its own
                cls._instance = cls()
            return cls._instance

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            batch = [self.queue.get()]
            while len(batch) < 200:  # whatever else is already waiting goes in the same pass
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                loop.run_until_complete(_send_batch(batch))
            except Exception:
                logger.warning("Could not push run events to the channel layer", exc_info=True)


async def _listened(layer: Any, groups: list[str]) -> set[str]:
    """The groups that may have members. With channels_redis, one ZCARD per group replaces the two
    commands ``group_send`` spends per message on a group nobody joined (most runs are watched by
    no one). Skipping is safe: a consumer joins its group before it reads the stored backlog, and
    a push happens after the event's commit, so an event sent to nobody is in that backlog. Any
    other layer, or an error, counts every group as listened to."""
    try:
        keys = [(group, layer._group_key(group), layer.connection(layer.consistent_hash(group))) for group in groups]
        listened = set()
        for group, key, conn in keys:
            if await conn.zcard(key):
                listened.add(group)
        return listened
    except Exception:
        return set(groups)


async def _send_batch(batch: list[tuple[Any, str, dict[str, Any]]]) -> None:
    """Send queued messages in order, skipping groups without members."""
    groups = list(dict.fromkeys(group for _, group, _ in batch))
    listened = await _listened(batch[0][0], groups) if all(item[0] is batch[0][0] for item in batch) else set(groups)
    for layer, group, message in batch:
        if group in listened:
            try:
                await layer.group_send(group, message)
            except Exception:
                logger.warning("Could not push a run event to the channel layer", exc_info=True)


def _push(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Send messages to channel-layer groups. A broken layer is logged, never raised into a run."""
    try:
        from channels.layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer()
        if layer is None:
            return
        if isinstance(layer, InMemoryChannelLayer):
            # In-process only: a group nobody in this process listens to needs no send at all.
            messages = [(group, message) for group, message in messages if layer.groups.get(group)]
            if messages:
                send = async_to_sync(layer.group_send)
                for group, message in messages:
                    send(group, message)
            return
        publisher = _Publisher.get()
        for group, message in messages:
            publisher.queue.put((layer, group, message))
    except Exception:
        logger.warning("Could not push run events to the channel layer", exc_info=True)


def run_status_message(run: Run) -> dict[str, Any]:
    return {
        "type": "run.status",
        "run": {
            "id": run.pk,
            "workflow_id": run.workflow_id,
            "status": run.status,
            "trigger": run.trigger,
            "error": run.error,
            "parent_id": run.parent_id,
            "created_at": run.created_at.isoformat() if run.created_at else None,
            "started_at": run.started_at.isoformat() if run.started_at else None,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        },
    }


def _schedule_push(event: RunEvent, status_run: Run | None = None) -> None:
    messages = [(run_group(event.run_id), {"type": "run.event", "event": event.as_message()})]
    if status_run is not None:
        messages.append((workspace_group(status_run.workspace_id), run_status_message(status_run)))
    transaction.on_commit(lambda: _push(messages))


# -- numbering --------------------------------------------------------------------------------------
def _allocate_seq(run_id: int, count: int = 1) -> tuple[int, str]:
    """Lock the run row and allocate the next ``count`` event numbers. Returns ``(last seq, run status)``."""
    buffer = Deferred.active(run_id)
    if buffer is not None:  # this thread holds the lock already; the counter is written at flush
        return buffer.allocate(count)
    table = connection.ops.quote_name(Run._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET event_seq = event_seq + %s WHERE id = %s RETURNING event_seq, status",  # noqa: S608
            [count, run_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"Run {run_id} does not exist.")
    return row[0], row[1]


def emit(
    run_id: int, event_type: str, data: dict[str, Any] | None = None, *, status_run: Run | None = None
) -> RunEvent:
    """Store one event (``node.log``, ``llm.token``, …) with the next seq and push it after commit.
    ``status_run`` also pushes that run's status to its workspace group."""
    buffer = Deferred.active(run_id)
    if buffer is not None:
        seq, _ = buffer.allocate()
        return buffer.add_event(run_id, seq, event_type, data or {}, status_run)
    with transaction.atomic(savepoint=False):
        seq, _ = _allocate_seq(run_id)
        event = RunEvent.objects.create(run_id=run_id, seq=seq, type=event_type, data=data or {})
        _schedule_push(event, status_run=status_run)
    return event


def emit_first(run: Run, event_type: str, data: dict[str, Any] | None = None) -> RunEvent:
    """Store event 1 of a run created in the current transaction with ``event_seq=1`` (nobody else
    can see the row yet, so no lock or counter update is needed); its status goes to the workspace."""
    if run.event_seq != 1 or not connection.in_atomic_block:
        raise ValueError("emit_first() is for a run created with event_seq=1 in the current transaction.")
    event = RunEvent.objects.create(run_id=run.pk, seq=1, type=event_type, data=data or {})
    _schedule_push(event, status_run=run)
    return event


def emit_first_many(runs: list[Run], event_type: str, data: dict[str, Any]) -> None:
    """:func:`emit_first` for runs created together, in one insert."""
    if not connection.in_atomic_block or any(run.event_seq != 1 for run in runs):
        raise ValueError("emit_first_many() is for runs created with event_seq=1 in the current transaction.")
    created = RunEvent.objects.bulk_create([RunEvent(run_id=run.pk, seq=1, type=event_type, data=data) for run in runs])
    messages: list[tuple[str, dict[str, Any]]] = []
    for run, event in zip(runs, created, strict=True):
        messages.append((run_group(run.pk), {"type": "run.event", "event": event.as_message()}))
        messages.append((workspace_group(run.workspace_id), run_status_message(run)))
    transaction.on_commit(lambda: _push(messages))


# -- run transitions --------------------------------------------------------------------------------
def transition_run(
    run: Run,
    new: str,
    *,
    data: dict[str, Any] | None = None,
    event_type: str | None = None,
    locked: Run | None = None,
    **fields: Any,
) -> Run:
    """Move ``run`` to ``new`` (checking the table under the row lock), save ``fields`` and emit
    ``run.<new>``. Updates and returns ``run``. Raises :class:`IllegalTransition`.

    ``locked``: the run as the caller just read it with ``select_for_update()`` in the current
    transaction (the engine's lease acquisition), so the lock and the fresh row are already there.
    The row lock makes ``event_seq`` current, so the status, its fields and the next seq are written
    by one UPDATE. No savepoint: a refused transition writes nothing and raises after the block."""
    buffer = Deferred.active(run.pk)
    with transaction.atomic(savepoint=False):
        if buffer is not None:
            locked = buffer.run  # locked and current: this transaction read it FOR UPDATE
        elif locked is None:
            locked = Run.objects.select_for_update().get(pk=run.pk)
        elif not connection.in_atomic_block:
            raise transaction.TransactionManagementError("transition_run(locked=…) needs the caller's transaction.")
        illegal = new not in RUN_TRANSITIONS[locked.status]
        if not illegal:
            now = timezone.now()
            locked.status = new
            if new == "running" and locked.started_at is None:
                locked.started_at = now
            if new in RUN_FINAL:
                locked.finished_at = now
                locked.lease_owner = ""
                locked.lease_expires_at = None
            changed = {"status", "updated_at", "event_seq", *fields}
            if new == "running":
                changed.add("started_at")
            if new in RUN_FINAL:
                changed |= {"finished_at", "lease_owner", "lease_expires_at"}
            for name, value in fields.items():
                setattr(locked, name, value)
            if buffer is None:
                locked.event_seq += 1
                seq = locked.event_seq
                locked.save(update_fields=sorted(changed))
            else:
                seq, _ = buffer.allocate()
                buffer.run_fields |= changed - {"event_seq"}
            payload = {"status": new, **(data or {})}
            if locked.error and new in RUN_FINAL and "error" not in payload:
                payload["error"] = locked.error
            if event_type is None:
                event_type = "run.started" if new == "running" else f"run.{new}"
                if new == "running" and payload.get("resumed"):
                    event_type = "run.resumed"
            if buffer is None:
                event = RunEvent.objects.create(run_id=locked.pk, seq=seq, type=event_type, data=payload)
                _schedule_push(event, status_run=locked)
            else:
                buffer.add_event(locked.pk, seq, event_type, payload, status_run=locked)
    if illegal:
        run.status = locked.status
        raise IllegalTransition("run", locked.status, new)
    if locked is not run:
        for name in ("status", "started_at", "finished_at", "lease_owner", "lease_expires_at", "event_seq", *fields):
            setattr(run, name, getattr(locked, name))
        run.updated_at = locked.updated_at
    return run


# -- node transitions -------------------------------------------------------------------------------
_NODE_SOURCES: dict[str, list[str]] = {
    new: [old for old, targets in NODE_TRANSITIONS.items() if new in targets] for new in NodeRunStatus.values
}
_NODE_EVENT = {
    NodeRunStatus.RUNNING: "node.started",
    NodeRunStatus.WAITING: "node.waiting",
    NodeRunStatus.SUCCEEDED: "node.succeeded",
    NodeRunStatus.FAILED: "node.failed",
    NodeRunStatus.SKIPPED: "node.skipped",
    NodeRunStatus.CANCELLED: "node.cancelled",
}


def _small(value: Any) -> bool:
    try:
        return len(json.dumps(value, default=str)) <= EVENT_OUTPUT_MAX_BYTES
    except (TypeError, ValueError):
        return False


def _node_payload(node_run: NodeRun, new: str, fields: dict[str, Any], data: dict[str, Any] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {"node_id": node_run.node_id, "node_type": node_run.node_type, "status": new}
    if "attempt" in fields:
        payload["attempt"] = fields["attempt"]
    if fields.get("error"):
        payload["error"] = fields["error"]
    if fields.get("branch"):
        payload["branch"] = fields["branch"]
    if fields.get("duration_ms") is not None:
        payload["duration_ms"] = round(fields["duration_ms"], 3)
    if new in (NodeRunStatus.SUCCEEDED, NodeRunStatus.WAITING) and "output" in fields:
        if _small(fields["output"]):
            payload["output"] = fields["output"]
        else:
            payload["output_truncated"] = True
    payload.update(data or {})
    return payload


def _update_node(node_run: NodeRun, sources: list[str], checked: str, fields: dict[str, Any], new: str = "") -> None:
    """Write ``new`` (default ``checked``) and ``fields`` if the node's status may move to ``checked``.
    A NodeRun created in a :class:`Deferred` transaction is not in the table yet: it is checked and
    changed in memory (nobody else can see it) and inserted as it stands at the flush."""
    new = new or checked
    if node_run.pk is None:
        if node_run.status not in sources:
            raise IllegalTransition("node", node_run.status, checked)
        return  # the caller sets the attributes; the flush inserts the row
    updated = NodeRun.objects.filter(pk=node_run.pk, status__in=sources).update(status=new, **fields)
    if not updated:
        current = NodeRun.objects.filter(pk=node_run.pk).values_list("status", flat=True).first()
        raise IllegalTransition("node", current or "missing", checked)


def transition_node(
    node_run: NodeRun,
    new: str,
    *,
    data: dict[str, Any] | None = None,
    allow_finished_run: bool = False,
    **fields: Any,
) -> NodeRun:
    """Move ``node_run`` to ``new`` and emit ``node.<…>`` in one transaction under the run row lock.

    A conditional UPDATE checks the table, so a concurrent writer cannot slip in between the check
    and the write. Once the run has ended only ``cancelled`` is accepted (:class:`RunFinished`),
    unless ``allow_finished_run``. No savepoint: a refused transition aborts the caller's transaction."""
    now = timezone.now()
    if new == NodeRunStatus.RUNNING:
        fields.setdefault("started_at", now)
    if new in NODE_FINAL or new == NodeRunStatus.WAITING:
        fields.setdefault("finished_at", now)
    buffer = Deferred.active(node_run.run_id)
    with transaction.atomic(savepoint=False):
        seq, run_status = _allocate_seq(node_run.run_id)
        if run_status in RUN_FINAL and new != NodeRunStatus.CANCELLED and not allow_finished_run:
            raise RunFinished(run_status, new)
        _update_node(node_run, _NODE_SOURCES[new], new, fields)
        payload = _node_payload(node_run, new, fields, data)
        if buffer is not None:
            buffer.add_event(node_run.run_id, seq, _NODE_EVENT[new], payload)
        else:
            event = RunEvent.objects.create(run_id=node_run.run_id, seq=seq, type=_NODE_EVENT[new], data=payload)
            _schedule_push(event)
    node_run.status = new
    for name, value in fields.items():
        setattr(node_run, name, value)
    return node_run


def transition_node_through_running(
    node_run: NodeRun, new: str, *, start_fields: dict[str, Any], **fields: Any
) -> NodeRun:
    """``→ running → new`` in one write with both events: for a node executed inline, whose
    ``running`` state would never be visible outside the transaction anyway."""
    if new not in NODE_TRANSITIONS[NodeRunStatus.RUNNING]:
        raise IllegalTransition("node", NodeRunStatus.RUNNING, new)
    now = timezone.now()
    start_fields.setdefault("started_at", now)
    fields.setdefault("finished_at", now)
    buffer = Deferred.active(node_run.run_id)
    with transaction.atomic(savepoint=False):
        seq, run_status = _allocate_seq(node_run.run_id, 2)
        if run_status in RUN_FINAL:
            raise RunFinished(run_status, new)
        _update_node(
            node_run, _NODE_SOURCES[NodeRunStatus.RUNNING], NodeRunStatus.RUNNING, {**start_fields, **fields}, new
        )
        pair = [
            (
                seq - 1,
                _NODE_EVENT[NodeRunStatus.RUNNING],
                _node_payload(node_run, NodeRunStatus.RUNNING, start_fields, None),
            ),
            (seq, _NODE_EVENT[new], _node_payload(node_run, new, fields, None)),
        ]
        if buffer is not None:
            for number, event_type, payload in pair:
                buffer.add_event(node_run.run_id, number, event_type, payload)
        else:
            created = RunEvent.objects.bulk_create(
                [RunEvent(run_id=node_run.run_id, seq=n, type=t, data=payload) for n, t, payload in pair]
            )
            for event in created:
                _schedule_push(event)
    node_run.status = new
    for name, value in {**start_fields, **fields}.items():
        setattr(node_run, name, value)
    return node_run
