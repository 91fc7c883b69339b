"""The run engine: executes a pinned workflow version, node by node, durably.

One :class:`Engine` executes one run in the calling thread. It takes the run's lease, loads the
pinned graph and the NodeRuns already finished (a redelivered or resumed run reuses them), then
loops: start every node whose parents are resolved (independent branches in parallel, each attempt
in its own daemon thread, at most ``GW_MAX_PARALLEL_NODES`` at once), collect results, apply the
node's policy (retry with backoff, timeout, on_error), skip nodes only reachable through untaken
branches, and finish the run. All status writes happen in the engine thread through
:mod:`runs.events`; an attempt thread only executes the node, so an abandoned attempt (timed out or
cancelled) can never write a status.

A watcher thread renews the lease (heartbeat) and polls the run's status every 0.2 s so a cancel
stops the run at once; in-flight attempts get their ``cancel_event`` set and are abandoned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import random
import socket
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from workflows.choices import ERROR_BRANCH, OnError
from workflows.nodes import NodeCancelled, NodeContext, NodeError, NodeResult, get_node_type

from . import events
from .choices import RUN_FINAL, IllegalTransition, NodeRunStatus, RunStatus
from .models import NodeRun, Run

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
# Pure, fast control-flow types run in the engine thread (no thread hop), unless they set a timeout.
INLINE_TYPES = frozenset({"template", "condition", "switch", "merge"})
INLINE_PER_STEP = 64
ARTIFACT_KEY = "$artifact"


class LeaseLost(Exception):
    """Another worker took the run over (our lease expired): stop without writing anything."""


# -- lifecycle helpers shared with the services -----------------------------------------------------
def concurrency_limit(run: Run) -> int:
    """The most runs of this run's workflow allowed to be running at once (0: unlimited)."""
    workflow = run.workflow
    if workflow.max_concurrent_runs:
        return workflow.max_concurrent_runs
    if workflow.workspace.default_max_concurrent_runs:
        return workflow.workspace.default_max_concurrent_runs
    return settings.GW_DEFAULT_MAX_CONCURRENT_RUNS or 0


_brokers: dict[int, Any] = {}


def _broker() -> Any:
    """This process's django-q2 broker for the Redis queue, reused across enqueues (django-q2 would
    build a new Redis client, and open a new connection, for every task). ``None`` with the ORM
    broker, which is cheap to build. Keyed by pid: a forked worker builds its own."""
    if not settings.Q_CLUSTER.get("redis"):
        return None
    broker = _brokers.get(os.getpid())
    if broker is None:
        from django_q.brokers import get_broker

        _brokers.clear()
        broker = _brokers[os.getpid()] = get_broker()
    return broker


def enqueue(run_id: int) -> None:
    """Hand the run to a django-q2 worker (after the current transaction commits).

    ``save=False``: django-q2 keeps no Success row for a run task (a failed task is still saved).
    The Run row is the record of the outcome; saving successes made the cluster's single monitor
    process lock and prune up to ``save_limit`` rows per finished run, which capped throughput."""
    transaction.on_commit(lambda: _send([run_id]))


def _send(chunk: list[int]) -> None:
    """Put one task on the queue: ``execute_run`` for one run, ``execute_runs`` for a chunk.
    ``save=False``: see :func:`enqueue`. A failure is logged: the reaper enqueues queued runs
    again, and the rows stay the source of truth."""
    from django_q.tasks import async_task

    try:
        if len(chunk) == 1:
            async_task(
                "runs.tasks.execute_run",
                chunk[0],
                task_name=f"run-{chunk[0]}",
                group="runs",
                save=False,
                broker=_broker(),
            )
        else:
            async_task(
                "runs.tasks.execute_runs",
                chunk,
                task_name=f"runs-{chunk[0]}-{chunk[-1]}",
                group="runs",
                save=False,
                broker=_broker(),
            )
    except Exception:
        logger.exception("Could not enqueue runs %s", chunk)


_INLINE_VERSIONS: dict[int, bool] = {}


def _inline_version(version_id: int) -> bool:
    """:func:`inline_only` of a pinned version, remembered per process (versions never change)."""
    if version_id not in _INLINE_VERSIONS:
        if len(_INLINE_VERSIONS) >= _VERSION_CACHE_SIZE:
            _INLINE_VERSIONS.clear()
        _INLINE_VERSIONS[version_id] = inline_only(version_definition(version_id))
    return _INLINE_VERSIONS[version_id]


def inline_only(definition: dict[str, Any]) -> bool:
    """Whether every node of a graph runs inline (pure control flow, no timeout): its runs finish in
    their first step, in well under a millisecond of node work, so per-run overhead is their cost."""
    nodes = definition.get("nodes") or []
    return bool(nodes) and all(n.get("type") in INLINE_TYPES and not n.get("timeout") for n in nodes)


def enqueue_many(run_ids: list[int], *, chunk: int) -> None:
    """Hand runs started together to the workers after the current transaction commits, in chunks
    of at most ``chunk`` runs (``runs.tasks.execute_runs``; a chunk of one is a plain
    ``execute_run``), and in at least as many chunks as there are workers when there are enough
    runs, so the batch spreads over all of them."""
    workers = max(1, int(settings.Q_CLUSTER.get("workers") or 1))
    size = max(1, min(chunk, -(-len(run_ids) // workers)))
    chunks = [run_ids[i : i + size] for i in range(0, len(run_ids), size)]

    def send() -> None:
        for chunk in chunks:
            _send(chunk)

    transaction.on_commit(send)


def start_queued_runs(workflow_id: int, limit: int) -> None:
    """Enqueue the oldest queued runs of a workflow that may fit under its concurrency limit."""
    queued = list(
        Run.objects.filter(workflow_id=workflow_id, status=RunStatus.QUEUED)
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )
    for run_id in queued:
        enqueue(run_id)


def after_finish(run: Run) -> None:
    """On commit of a final status: the completion callback, and the next queued runs when the
    workflow limits concurrency (without a limit every queued run already has its own message)."""
    if run.callback_url:
        from .callbacks import enqueue_run_callback

        run_id = run.pk
        transaction.on_commit(lambda: enqueue_run_callback(run_id))
    limit = concurrency_limit(run) if run.workflow_id else 0
    if limit:
        start_queued_runs(run.workflow_id, limit)


def finish_run(run: Run, status: str, **fields: Any) -> Run:
    """Move a run to a final status (raises IllegalTransition if it already ended) and run the hooks."""
    with transaction.atomic():
        events.transition_run(run, status, **fields)
        after_finish(run)
    return run


def cancel_active_children(run_id: int, node_id: str | None = None) -> None:
    """Cancel the child runs (sub-workflows, loop bodies) still active under a run (or one node)."""
    children = Run.objects.filter(parent_id=run_id).active()
    if node_id:
        children = children.filter(parent_node_id=node_id)
    for child in children:
        try:
            finish_run(child, RunStatus.CANCELLED, error="The parent run stopped this run.")
        except IllegalTransition:
            continue
        cancel_active_children(child.pk)


# -- pinned versions ------------------------------------------------------------------------------
_VERSION_CACHE: OrderedDict[int, str] = OrderedDict()
_VERSION_CACHE_SIZE = 256
_version_lock = threading.Lock()


def version_definition(version_id: int) -> dict[str, Any]:
    """The definition of a workflow version, as a fresh dict the caller may change. A version is
    immutable, so a worker keeps the latest few hundred as JSON text and skips the query (and the
    join on every run start); each call decodes its own copy."""
    with _version_lock:
        text = _VERSION_CACHE.get(version_id)
        if text is not None:
            _VERSION_CACHE.move_to_end(version_id)
    if text is None:
        from workflows.models import WorkflowVersion

        definition = WorkflowVersion.objects.filter(pk=version_id).values_list("definition", flat=True).first()
        text = json.dumps(definition or {})
        with _version_lock:
            _VERSION_CACHE[version_id] = text
            while len(_VERSION_CACHE) > _VERSION_CACHE_SIZE:
                _VERSION_CACHE.popitem(last=False)
    return json.loads(text)


# -- outputs --------------------------------------------------------------------------------------
def load_output(value: Any, run_id: int | None = None) -> Any:
    """An output as downstream nodes see it: an artifact reference is read back from its file."""
    if isinstance(value, dict) and ARTIFACT_KEY in value:
        from .models import Artifact

        artifact = Artifact.objects.filter(pk=value[ARTIFACT_KEY].get("id")).first()
        if artifact is not None:
            with artifact.file.open("rb") as handle:
                return json.loads(handle.read().decode())
    return value


def retry_delay(retry: dict[str, Any], attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: fixed or exponential, with ±25 % jitter, capped."""
    initial = float(retry.get("initial_delay", retry.get("delay", 1.0)) or 0.0)
    max_delay = float(retry.get("max_delay", 60.0) or 60.0)
    delay = initial * (2 ** (attempt - 1)) if retry.get("backoff", "fixed") == "exponential" else initial
    if retry.get("jitter", True) and delay > 0:
        delay *= 1 + random.uniform(-0.25, 0.25)
    return max(0.0, min(delay, max_delay))


# -- the engine -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Attempt:
    node_id: str
    number: int
    ctx: NodeContext
    started: float
    deadline: float | None
    abandoned: bool = False
    thread: threading.Thread | None = None


@dataclass
class _NodeState:
    status: str = "pending"  # pending | running | retry | waiting | done | skipped
    output: Any = None
    branch: str = ""
    route: str = ""  # "" (normal), "continue" or "error" when the node failed under that on_error
    retry_at: float = 0.0
    next_attempt: int = 1
    failures: list[str] = field(default_factory=list)


_HOSTNAME: list[str] = []


def _owner() -> str:
    if not _HOSTNAME:  # gethostname() is a system call; the name does not change under a worker
        _HOSTNAME.append(socket.gethostname())
    return f"{_HOSTNAME[0]}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


class Engine:
    """Executes one run. ``Engine(run_id).execute()`` returns the run, or None when it did nothing
    (already finished, another worker holds the lease, or over the concurrency limit)."""

    def __init__(self, run_id: int, *, bypass_limit: bool = False):
        self.run_id = run_id
        self.bypass_limit = bypass_limit
        self.owner = _owner()
        self.run: Run | None = None
        self.results: queue.Queue = queue.Queue()
        self.stop_watch = threading.Event()
        self.run_stopped: str | None = None  # a final status someone else wrote (cancel)
        self.lease_lost = False
        self.inflight: dict[str, Attempt] = {}
        self.state: dict[str, _NodeState] = {}
        self.node_runs: dict[str, NodeRun] = {}
        self.node_context: dict[str, dict[str, Any]] = {}
        self.inbox: list[tuple[Attempt, str, Any]] = []
        self.failure: str | None = None
        self.resumed = False
        self.fresh = False  # first start of a queued run: it has no NodeRuns yet
        self.watcher: threading.Thread | None = None
        self.started_mono = 0.0
        self.more_ready = False  # the step's inline budget ran out with nodes still ready

    # -- lease ------------------------------------------------------------------------------------
    def _lease_until(self):
        return timezone.now() + timedelta(seconds=settings.GW_LEASE_SECONDS)

    def _admitted(self, run: Run) -> bool:
        limit = concurrency_limit(run)
        if not limit:
            return True
        from workflows.models import Workflow

        # Serialise admissions per workflow so two workers cannot both take the last slot.
        list(Workflow.objects.select_for_update().filter(pk=run.workflow_id).values_list("pk", flat=True))
        running = Run.objects.filter(workflow_id=run.workflow_id, status=RunStatus.RUNNING).count()
        ahead = Run.objects.filter(workflow_id=run.workflow_id, status=RunStatus.QUEUED, pk__lt=run.pk).count()
        return running + ahead < limit

    def _acquire(self, buffer: events.Deferred) -> Run | None:
        """Take the run's lease in the caller's transaction (which goes on with the first step)."""
        with transaction.atomic(savepoint=False):
            run = next(iter(_locked_runs([self.run_id])), None)
            return self._take(run, buffer)

    def _take(self, run: Run | None, buffer: events.Deferred) -> Run | None:
        """Take the lease of ``run``, just read FOR UPDATE in the caller's transaction: start it,
        resume it or recover it. None when there is nothing for this worker to do."""
        with transaction.atomic(savepoint=False):
            if run is None or run.status in RUN_FINAL:
                return None
            now = timezone.now()
            if run.lease_owner and run.lease_expires_at and run.lease_expires_at > now:
                return None  # a duplicate delivery while another worker is alive
            lease = {"lease_owner": self.owner, "lease_expires_at": self._lease_until()}
            if run.status == RunStatus.QUEUED:
                if not self.bypass_limit and not self._admitted(run):
                    return None
                # queued → running happens once; only run_rerun creates NodeRuns before that.
                self.fresh = run.rerun_of_id is None
                if self.fresh:  # nothing of this run exists beyond its row: write it all at the end
                    buffer.attach(run)
                events.transition_run(run, RunStatus.RUNNING, locked=run, attempt=1, data={"attempt": 1}, **lease)
            elif run.status == RunStatus.WAITING:
                events.transition_run(run, RunStatus.RUNNING, locked=run, data={"resumed": True}, **lease)
                self.resumed = True
            else:  # running with an expired lease: the worker died; recover as a new attempt
                if run.attempt >= settings.GW_MAX_RUN_ATTEMPTS:
                    error = (
                        f"The run was interrupted {run.attempt} times (its worker stopped or lost its lease); "
                        f"giving up after GW_MAX_RUN_ATTEMPTS={settings.GW_MAX_RUN_ATTEMPTS} attempts."
                    )
                    self._fail_interrupted_nodes(run, error)
                    finish_run(run, RunStatus.FAILED, error=error)
                    return None
                run.attempt += 1
                Run.objects.filter(pk=run.pk).update(attempt=run.attempt, **lease)
                for name, value in lease.items():
                    setattr(run, name, value)
                events.emit(run.pk, "run.recovered", {"attempt": run.attempt})
        return run

    def _fail_interrupted_nodes(self, run: Run, error: str) -> None:
        for node_run in NodeRun.objects.filter(run=run, status=NodeRunStatus.RUNNING):
            events.transition_node(node_run, NodeRunStatus.FAILED, error=error)

    def _watch(self) -> None:
        """Heartbeat the lease and notice a cancel (or any final status written elsewhere) quickly."""
        last_beat = time.monotonic()
        try:
            while not self.stop_watch.wait(POLL_SECONDS):
                row = Run.objects.filter(pk=self.run_id).values_list("status", "lease_owner").first()
                if row is None or row[0] in RUN_FINAL:
                    self.run_stopped = row[0] if row else RunStatus.CANCELLED
                    self.results.put(None)
                    return
                if time.monotonic() - last_beat >= settings.GW_HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    renewed = Run.objects.filter(pk=self.run_id, lease_owner=self.owner).update(
                        lease_expires_at=self._lease_until()
                    )
                    if not renewed:
                        self.lease_lost = True
                        self.results.put(None)
                        return
        except Exception:
            logger.exception("Run %s: the watcher stopped", self.run_id)
        finally:
            connections.close_all()

    # -- entry point ------------------------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        """Start the heartbeat/cancel watcher. Lazily: a run that finishes within ``POLL_SECONDS``
        without ever waiting never needed it (its first poll would have come after the end). The
        engine starts it before it first waits for anything, launches an attempt thread, or once
        ``POLL_SECONDS`` have passed, so cancel and lease renewal behave as before."""
        if self.watcher is None:
            self.watcher = threading.Thread(target=self._watch, name=f"run-{self.run_id}-watch", daemon=True)
            self.watcher.start()

    def execute(self) -> Run | None:
        """Take the lease and run the first step in one transaction (a run made only of inline
        nodes finishes right there, in one commit), then go on step by step."""

        def first() -> list[Attempt] | None:
            with transaction.atomic(), events.Deferred() as buffer:
                run = self._acquire(buffer)
                return None if run is None else self._first_step(run)

        return self._protected(first)

    def _first_step(self, run: Run) -> list[Attempt] | None:
        """The first step of a run whose lease this transaction just took. Returns the attempts to
        launch after the commit, or None when the run already ended (or failed) in it."""
        self.run = run
        self.started_mono = time.monotonic()
        return self._guarded(self._begin)

    def _protected(self, first: Any) -> Run | None:
        """Call ``first()`` (the transaction of the first step, which returns what to launch after
        its commit), then go on to the end of the run. Whatever breaks is recorded on the run."""
        try:
            launch = first()
            if launch is not None:
                self._guarded(lambda: self._go_on(launch))
        except LeaseLost:
            self._abandon_all()
        except Exception as exc:
            if self.run is None:
                raise  # nothing was taken: the task records the crash
            # The first transaction broke and rolled back (the run is queued again): end it here.
            logger.exception("Run %s: engine error", self.run_id)
            self.run = Run.objects.filter(pk=self.run_id).first()
            if self.run is not None:
                with contextlib.suppress(IllegalTransition):
                    finish_run(self.run, RunStatus.FAILED, error=f"Engine error: {type(exc).__name__}: {exc}")
        finally:
            self.stop_watch.set()
        return self.run

    # -- graph ------------------------------------------------------------------------------------
    def _load_graph(self) -> None:
        definition = version_definition(self.run.version_id)
        self.definition = definition
        self.nodes: dict[str, dict[str, Any]] = {n["id"]: n for n in definition.get("nodes", [])}
        self.incoming: dict[str, list[tuple[str, str]]] = {node_id: [] for node_id in self.nodes}
        self.outgoing: dict[str, list[tuple[str, str]]] = {node_id: [] for node_id in self.nodes}
        for edge in definition.get("edges", []):
            source, target, branch = edge["source"], edge["target"], edge.get("branch") or ""
            if source in self.nodes and target in self.nodes:
                self.outgoing[source].append((target, branch))
                self.incoming[target].append((source, branch))
        # A topological order, so one pass propagates skips down a chain.
        order, indegree = [], {n: len(self.incoming[n]) for n in self.nodes}
        ready = [n for n in self.nodes if indegree[n] == 0]
        while ready:
            node_id = ready.pop(0)
            order.append(node_id)
            for target, _ in self.outgoing[node_id]:
                indegree[target] -= 1
                if indegree[target] == 0:
                    ready.append(target)
        self.order = order + [n for n in self.nodes if n not in order]  # cycles end up last, never ready
        self.sinks = [n for n in self.nodes if not self.outgoing[n]]

    def _load_node_runs(self) -> None:
        if self.fresh:  # (run, node_id) is unique: a wrong guess would fail loudly, never duplicate
            existing: dict[str, NodeRun] = {}
            buffer = events.Deferred.active(self.run.pk)
        else:
            buffer = None
            existing = {nr.node_id: nr for nr in NodeRun.objects.filter(run_id=self.run.pk)}
        missing = [
            NodeRun(run_id=self.run.pk, node_id=node_id, node_type=self.nodes[node_id].get("type", ""))
            for node_id in self.order
            if node_id not in existing
        ]
        if missing and buffer is not None:  # inserted with the statuses they have at the flush
            buffer.add_node_runs(missing)
            existing.update({nr.node_id: nr for nr in missing})
        elif missing:
            created = NodeRun.objects.bulk_create(missing)
            if all(nr.pk for nr in created):
                existing.update({nr.node_id: nr for nr in created})
            else:  # a backend that cannot return ids from a bulk insert
                existing = {nr.node_id: nr for nr in NodeRun.objects.filter(run_id=self.run.pk)}
        self.node_runs = existing
        for node_id in self.order:
            node_run = existing[node_id]
            state = _NodeState(next_attempt=node_run.attempt + 1)
            self.state[node_id] = state
            if node_run.status == NodeRunStatus.SUCCEEDED:
                state.status, state.branch = "done", node_run.branch
                state.output = load_output(node_run.output, self.run.pk)
                self._publish(node_id)
            elif node_run.status == NodeRunStatus.SKIPPED:
                state.status = "skipped"
            elif node_run.status == NodeRunStatus.FAILED:
                on_error = self.nodes[node_id].get("on_error") or OnError.FAIL
                if on_error == OnError.FAIL:
                    raise _RunFailed(f"Node {node_id!r} failed: {node_run.error}")
                state.status, state.output = "done", node_run.output
                state.route = "error" if on_error == OnError.BRANCH else "continue"
                state.branch = node_run.branch
                self._publish(node_id)
            elif node_run.status == NodeRunStatus.WAITING:
                state.status, state.output = "waiting", node_run.output
            elif node_run.status == NodeRunStatus.CANCELLED:
                raise _RunFailed(f"Node {node_id!r} was cancelled.")

    def _save_node_runs(self) -> None:
        """Insert NodeRuns still held back by the first step's deferred writes (an artifact needs
        its node's primary key)."""
        buffer = events.Deferred.active(self.run.pk)
        if buffer is not None:
            buffer.save_node_runs()

    def _publish(self, node_id: str) -> None:
        state, node_run = self.state[node_id], self.node_runs[node_id]
        self.node_context[node_id] = {"output": state.output, "status": node_run.status, "branch": state.branch}

    def _edge_active(self, source: str, branch: str) -> bool | None:
        """None while the source is unresolved, else whether the edge carries the run forward."""
        state = self.state[source]
        if state.status == "skipped":
            return False
        if state.status != "done":
            return None
        if state.route == "error":
            return branch == ERROR_BRANCH
        if branch == ERROR_BRANCH:
            return False
        return branch == "" or branch == state.branch

    # -- main loop --------------------------------------------------------------------------------
    def _guarded(self, body: Any) -> Any:
        """Call ``body``; a failure ends the run as failed (in the current transaction, if any).
        Returns what ``body`` returned, or None when it raised."""
        try:
            return body()
        except _RunFailed as failure:
            self._abandon_all()
            self._finish(RunStatus.FAILED, error=str(failure))
        except events.RunFinished:
            self._abandon_all()
            self._refresh()
        except LeaseLost:
            raise
        except Exception as exc:
            if connection.in_atomic_block and connection.needs_rollback:
                raise  # the transaction is broken: execute() fails the run after the rollback
            logger.exception("Run %s: engine error", self.run_id)
            self._abandon_all()
            self._finish(RunStatus.FAILED, error=f"Engine error: {type(exc).__name__}: {exc}")
        return None

    def _refresh(self) -> None:
        """Re-read the run after someone else ended it (never while its writes are deferred: then
        nobody else can have written it, and the in-memory row is the one the flush saves)."""
        if events.Deferred.active(self.run.pk) is None:
            self.run.refresh_from_db()

    def _begin(self) -> list[Attempt] | None:
        """Load the graph and run the first step (in the lease's transaction). Returns the attempts
        to launch once it commits, or None when the run already ended."""
        run = self.run
        self._load_graph()
        if not self.nodes:
            raise _RunFailed("The workflow has no nodes.")
        self._load_node_runs()  # a fresh run's rows are inserted at the flush, with their statuses
        self._base_context()
        timeout = self.definition.get("timeout") or run.workflow.timeout or settings.GW_RUN_TIMEOUT
        # Time parked waiting for a person does not count: a resumed run gets the full timeout again.
        started = timezone.now() if self.resumed or not run.started_at else run.started_at
        self.run_deadline = time.monotonic() + float(timeout) - (timezone.now() - started).total_seconds()
        self.run_timeout = float(timeout)
        finished, launch = self._step(max(1, settings.GW_MAX_PARALLEL_NODES))
        return None if finished else launch

    def _go_on(self, launch: list[Attempt]) -> None:
        """After the first step's commit: launch its attempts, then loop."""
        if not self._after_step(launch):
            self._loop()

    def _base_context(self) -> None:
        run = self.run
        inputs = run.inputs or {}
        self.vars = self.definition.get("variables", self.definition.get("vars")) or run.workflow.variables or {}
        self.run_info = {
            "id": run.pk,
            "attempt": run.attempt,
            "workflow_id": run.workflow_id,
            "workflow": run.workflow.name,
            "trigger": run.trigger,
            "parent_id": run.parent_id,
            "started_at": run.started_at.isoformat() if run.started_at else None,
        }
        self.extra_context: dict[str, Any] = {}
        if run.parent_id and "item" in inputs:
            self.extra_context = {"item": inputs.get("item"), "index": inputs.get("index")}

    def _check_stopped(self) -> None:
        if self.lease_lost:
            raise LeaseLost()
        if self.run_stopped:
            raise events.RunFinished(self.run_stopped, "stop")

    def _loop(self) -> None:
        max_parallel = max(1, settings.GW_MAX_PARALLEL_NODES)
        while True:
            finished, launch = self._step(max_parallel)
            if finished or self._after_step(launch):
                return

    def _step(self, max_parallel: int) -> tuple[bool, list[Attempt]]:
        """One step = one transaction: record what finished, then start (or run inline) what is
        ready. Returns whether the run finished, and the attempts to launch after the commit (so a
        node never runs before its "running" row is visible)."""
        if time.monotonic() - self.started_mono >= POLL_SECONDS:
            self._ensure_watcher()
        self._check_stopped()
        if time.monotonic() >= self.run_deadline:
            raise _RunFailed(f"The run timed out after {self.run_timeout:g} s.")
        self._poll_waiting()
        launch: list[Attempt] = []
        with transaction.atomic(savepoint=False):
            self._drain()
            self._expire_attempts()
            if self.failure is None:
                self._schedule(max_parallel, launch)
            if self._complete(launch):
                # Every node is resolved: finish the run in this step's transaction, one commit
                # instead of two. The step's node writes locked the run row after checking it had
                # not ended, so nobody can end it in between.
                self._succeed()
                return True, launch
            if self._parkable(launch) and self._wait():
                # Only approvals remain: the run waits in the same commit as its last waiting node,
                # so nobody ever sees a node waiting for a person under a run still "running".
                return True, launch
        return False, launch

    def _after_step(self, launch: list[Attempt]) -> bool:
        """Launch the step's attempts, then wait for the next result. True when the run is done here."""
        if launch:
            self._ensure_watcher()
        for attempt in launch:
            attempt.thread.start()
        if self.failure is not None:
            raise _RunFailed(self.failure)
        if self._settled():
            return True
        self._wait_for_message()
        return False

    def _schedule(self, max_parallel: int, launch: list[Attempt]) -> None:
        """Start due retries and newly ready nodes; skip what can no longer run. Nodes run inline
        cascade within the same pass (the order is topological), up to a budget per step."""
        inline_budget = INLINE_PER_STEP
        self.more_ready = False
        for node_id in self.order:
            if self.failure is not None:
                return
            state = self.state[node_id]
            if state.status == "retry":
                if state.retry_at <= time.monotonic() and len(self.inflight) < max_parallel:
                    inline_budget -= self._start(node_id, launch)
            elif state.status == "pending":
                incoming = [self._edge_active(s, b) for s, b in self.incoming[node_id]]
                if any(flag is None for flag in incoming):
                    continue
                if incoming and not any(incoming):
                    self._skip(node_id)
                elif len(self.inflight) < max_parallel and inline_budget > 0:
                    inline_budget -= self._start(node_id, launch)
                elif inline_budget <= 0:
                    self.more_ready = True

    def _wait_for_message(self) -> None:
        if self.more_ready:
            return  # commit this step and go straight on with the next one
        self._ensure_watcher()
        deadlines = [a.deadline for a in self.inflight.values() if a.deadline]
        deadlines += [s.retry_at for s in self.state.values() if s.status == "retry"]
        deadlines.append(self.run_deadline)
        timeout = max(0.0, min([POLL_SECONDS, *[d - time.monotonic() for d in deadlines]]))
        try:
            message = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        if message is not None:
            self.inbox.append(message)

    def _drain(self) -> None:
        while self.inbox:
            self._handle(*self.inbox.pop(0))
        while True:
            try:
                message = self.results.get_nowait()
            except queue.Empty:
                return
            if message is not None:
                self._handle(*message)

    def _complete(self, launch: list[Attempt]) -> bool:
        """Whether the run can succeed right now: every node done or skipped, nothing in flight."""
        if self.failure is not None or launch or self.inflight or self.run_stopped or self.lease_lost:
            return False
        return all(s.status in ("done", "skipped") for s in self.state.values())

    def _parkable(self, launch: list[Attempt]) -> bool:
        """Whether nothing can happen until a person decides: no attempt running or due, nothing
        startable left, and at least one node waiting."""
        if self.failure is not None or launch or self.inflight or self.more_ready:
            return False
        if self.run_stopped or self.lease_lost:
            return False
        statuses = {s.status for s in self.state.values()}
        return "waiting" in statuses and statuses <= {"done", "skipped", "waiting", "pending"}

    def _settled(self) -> bool:
        """Finish the run (or put it to wait) when nothing more can happen in this worker."""
        statuses = [s.status for s in self.state.values()]
        if any(s in ("running", "retry") for s in statuses) or self.inflight:
            return False
        if any(s == "pending" for s in statuses):
            # Pending with nothing running and no waiting node to unblock it: a cycle in the graph.
            if any(s == "waiting" for s in statuses):
                return self._wait()
            stuck = [n for n, s in self.state.items() if s.status == "pending"]
            if any(
                all(self._edge_active(s, b) is not None for s, b in self.incoming[n]) for n in stuck
            ):  # still startable (parallel limit); loop again
                return False
            raise _RunFailed(f"Nodes {', '.join(stuck)} can never run (is there a cycle?).")
        if any(s == "waiting" for s in statuses):
            return self._wait()
        self._succeed()
        return True

    # -- starting, skipping -----------------------------------------------------------------------
    def _skip(self, node_id: str) -> None:
        events.transition_node(self.node_runs[node_id], NodeRunStatus.SKIPPED)
        self.state[node_id].status = "skipped"

    def _context_for(self, node_id: str) -> dict[str, Any]:
        parents = {
            source: self.node_context[source]["output"]
            for source, _ in self.incoming[node_id]
            if source in self.node_context
        }
        return {
            "inputs": self.run.inputs or {},
            "vars": self.vars,
            "run": self.run_info,
            "nodes": dict(self.node_context),
            "parents": parents,
            **self.extra_context,
        }

    def _start(self, node_id: str, launch: list[Attempt]) -> int:
        """Start an attempt: in a thread (launched by the caller after commit), or inline for pure
        control-flow nodes. Returns 1 when it ran inline (it counts against the step's budget)."""
        node, state, node_run = self.nodes[node_id], self.state[node_id], self.node_runs[node_id]
        number = state.next_attempt
        state.next_attempt += 1
        key = f"run:{self.run.pk}:node:{node_id}"
        fields: dict[str, Any] = {"attempt": number, "idempotency_key": key}
        if node_run.input is None:
            fields["input"] = node.get("config") or {}
        state.status = "running"
        timeout = node.get("timeout")
        started = time.monotonic()
        ctx = NodeContext(
            node_id=node_id,
            node_type=node.get("type", ""),
            config=node.get("config") or {},
            context=self._context_for(node_id),
            run_id=self.run.pk,
            workspace_id=self.run.workspace_id,
            user_id=self.run.created_by_id,
            attempt=number,
            idempotency_key=key,
            deadline=started + float(timeout) if timeout else None,
            engine=self,
        )
        attempt = Attempt(node_id=node_id, number=number, ctx=ctx, started=started, deadline=ctx.deadline)
        ctx.artifact_callback = lambda **kwargs: self._artifact_from(attempt, **kwargs)
        self.inflight[node_id] = attempt
        if ctx.node_type in INLINE_TYPES and not timeout:
            self._run_inline(attempt, fields)
            return 1
        events.transition_node(node_run, NodeRunStatus.RUNNING, **fields)
        ctx.emit_callback = lambda event_type, data: self._emit_from(attempt, event_type, data)
        attempt.thread = threading.Thread(
            target=self._run_attempt, args=(attempt,), name=f"run-{self.run.pk}-{node_id}", daemon=True
        )
        launch.append(attempt)
        return 0

    def _run_inline(self, attempt: Attempt, start_fields: dict[str, Any]) -> None:
        """Execute a pure node in the engine thread. The common case (a plain output, no events of
        its own) is written in one go: ``running`` and ``succeeded`` with both their events."""
        buffered: list[tuple[str, dict[str, Any]]] = []
        attempt.ctx.emit_callback = lambda event_type, data: buffered.append((event_type, data))
        kind, result = self._call_node(attempt)
        node_run = self.node_runs[attempt.node_id]
        if kind == "ok" and not buffered and not (isinstance(result, NodeResult) and result.wait):
            output, branch = (result.output, result.branch or "") if isinstance(result, NodeResult) else (result, "")
            try:
                stored = self._store_output(node_run, output)
            except NodeError as exc:
                kind, result = "error", exc
            else:
                del self.inflight[attempt.node_id]
                events.transition_node_through_running(
                    node_run,
                    NodeRunStatus.SUCCEEDED,
                    start_fields=start_fields,
                    output=stored,
                    branch=branch,
                    logs=attempt.ctx.logs,
                    duration_ms=(time.monotonic() - attempt.started) * 1000,
                    error="",
                )
                state = self.state[attempt.node_id]
                state.status, state.output, state.branch = "done", output, branch
                self._publish(attempt.node_id)
                return
        events.transition_node(node_run, NodeRunStatus.RUNNING, **start_fields)
        for event_type, data in buffered:
            self._emit_from(attempt, event_type, data)
        attempt.ctx.emit_callback = lambda event_type, data: self._emit_from(attempt, event_type, data)
        self._handle(attempt, kind, result)

    def _call_node(self, attempt: Attempt) -> tuple[str, Any]:
        """Execute the node once; never writes a status. Returns ``(kind, result or NodeError)``."""
        node_type = get_node_type(attempt.ctx.node_type)
        try:
            if node_type is None:
                raise NodeError(f"Unknown node type {attempt.ctx.node_type!r}.", retryable=False)
            return "ok", node_type.execute(attempt.ctx)
        except NodeCancelled as exc:
            return "cancelled", NodeError(str(exc) or "cancelled", retryable=False)
        except NodeError as exc:
            return "error", exc
        except Exception as exc:
            logger.info("Run %s node %s raised", self.run_id, attempt.node_id, exc_info=True)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return "error", NodeError(detail, retryable=True)

    def _run_attempt(self, attempt: Attempt) -> None:
        """The attempt thread: execute, report back to the engine thread, release its connection."""
        try:
            self.results.put((attempt, *self._call_node(attempt)))
        finally:
            connections.close_all()

    def _emit_from(self, attempt: Attempt, event_type: str, data: dict[str, Any]) -> None:
        if attempt.abandoned:
            return
        events.emit(self.run.pk, event_type, {**data, "attempt": attempt.number})

    def _artifact_from(self, attempt: Attempt, **kwargs: Any) -> dict[str, Any]:
        if attempt.abandoned:
            raise NodeCancelled("abandoned")
        from .services import artifact_save

        self._save_node_runs()
        artifact = artifact_save(run=self.run, node_run=self.node_runs[attempt.node_id], **kwargs)
        return artifact_reference(artifact)

    # -- results ----------------------------------------------------------------------------------
    def _handle(self, attempt: Attempt, kind: str, payload: Any) -> None:
        if self.inflight.get(attempt.node_id) is not attempt:
            return  # an abandoned attempt reporting late
        del self.inflight[attempt.node_id]
        duration_ms = (time.monotonic() - attempt.started) * 1000
        if kind == "ok":
            try:
                self._succeeded(attempt, payload, duration_ms)
            except NodeError as exc:
                self._failed(attempt, exc, duration_ms)
        else:
            self._failed(attempt, payload, duration_ms)

    def _succeeded(self, attempt: Attempt, result: Any, duration_ms: float) -> None:
        node_id = attempt.node_id
        state, node_run = self.state[node_id], self.node_runs[node_id]
        if isinstance(result, NodeResult):
            output, branch, wait = result.output, result.branch or "", result.wait
        else:
            output, branch, wait = result, "", False
        stored = self._store_output(node_run, output)
        common = {"output": stored, "logs": attempt.ctx.logs, "duration_ms": duration_ms, "error": ""}
        if wait:
            events.transition_node(node_run, NodeRunStatus.WAITING, branch=branch, **common)
            state.status, state.output = "waiting", output
            return
        events.transition_node(node_run, NodeRunStatus.SUCCEEDED, branch=branch, **common)
        state.status, state.output, state.branch = "done", output, branch
        self._publish(node_id)

    def _store_output(self, node_run: NodeRun, output: Any) -> Any:
        try:
            encoded = json.dumps(output, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise NodeError(f"The node's output is not JSON: {exc}", retryable=False) from exc
        if len(encoded) <= settings.GW_OUTPUT_MAX_BYTES:
            return output
        from .services import artifact_save

        self._save_node_runs()
        artifact = artifact_save(
            run=self.run,
            node_run=node_run,
            name=f"{node_run.node_id}.output.json",
            content=encoded.encode(),
            content_type="application/json",
        )
        return {ARTIFACT_KEY: artifact_reference(artifact), "truncated": True, "preview": encoded[:512]}

    def _failed(self, attempt: Attempt, error: NodeError, duration_ms: float) -> None:
        node_id = attempt.node_id
        node, state, node_run = self.nodes[node_id], self.state[node_id], self.node_runs[node_id]
        retry = node.get("retry") or {}
        max_attempts = int(retry.get("max_attempts", 1) or 1)
        message = error.message if isinstance(error, NodeError) else str(error)
        state.failures.append(message)
        if error.retryable and attempt.number < max_attempts:
            delay = retry_delay(retry, attempt.number)
            state.status, state.retry_at = "retry", time.monotonic() + delay
            events.emit(
                self.run.pk,
                "node.retrying",
                {"node_id": node_id, "attempt": attempt.number, "error": message, "delay": round(delay, 3)},
            )
            return
        on_error = node.get("on_error") or OnError.FAIL
        output = {"error": message, "attempts": attempt.number, **(error.data or {})}
        fields = {"error": message, "logs": attempt.ctx.logs, "duration_ms": duration_ms, "output": output}
        if on_error == OnError.FAIL:
            events.transition_node(node_run, NodeRunStatus.FAILED, **fields)
            state.status = "failed"
            self.failure = f"Node {node_id!r} failed: {message}"  # raised after the step commits
            return
        branch = ERROR_BRANCH if on_error == OnError.BRANCH else ""
        events.transition_node(node_run, NodeRunStatus.FAILED, branch=branch, data={"on_error": on_error}, **fields)
        state.status, state.output, state.branch = "done", output, branch
        state.route = "error" if on_error == OnError.BRANCH else "continue"
        self._publish(node_id)

    def _expire_attempts(self) -> None:
        now = time.monotonic()
        for attempt in list(self.inflight.values()):
            if attempt.deadline is not None and now >= attempt.deadline:
                self._abandon(attempt)
                del self.inflight[attempt.node_id]
                timeout = self.nodes[attempt.node_id].get("timeout")
                error = NodeError(f"Timed out after {float(timeout):g} s.", retryable=True)
                self._failed(attempt, error, (now - attempt.started) * 1000)

    def _abandon(self, attempt: Attempt) -> None:
        attempt.abandoned = True
        attempt.ctx.cancel_event.set()
        cancel_active_children(self.run.pk, attempt.node_id)

    def _abandon_all(self) -> None:
        """Stop waiting for every in-flight attempt and record it as cancelled."""
        for attempt in list(self.inflight.values()):
            self._abandon(attempt)
        stopped = list(self.inflight) + [n for n, s in self.state.items() if s.status == "retry"]
        self.inflight.clear()
        if self.lease_lost:
            return
        for node_id in stopped:
            with contextlib.suppress(IllegalTransition):
                events.transition_node(self.node_runs[node_id], NodeRunStatus.CANCELLED)

    # -- waiting nodes (approvals) ----------------------------------------------------------------
    def _poll_waiting(self) -> None:
        waiting = [n for n, s in self.state.items() if s.status == "waiting"]
        if not waiting:
            return
        from .services import approval_expire

        for node_run in NodeRun.objects.filter(run_id=self.run.pk, node_id__in=waiting):
            if node_run.status == NodeRunStatus.WAITING:
                approval_expire(node_run=node_run)
            if node_run.status in (NodeRunStatus.SUCCEEDED, NodeRunStatus.FAILED):
                self.node_runs[node_run.node_id] = node_run
                state = self.state[node_run.node_id]
                state.status, state.output, state.branch = "done", node_run.output, node_run.branch
                if node_run.status == NodeRunStatus.FAILED:
                    state.route = "error"
                self._publish(node_run.node_id)

    def _wait(self) -> bool:
        """Every remaining node waits for a person: park the run and free this worker.

        Under the run lock, re-check that no waiting node was resolved meanwhile (run_resume takes
        the same lock), so a decision can never be lost between the check and the transition."""
        waiting = [n for n, s in self.state.items() if s.status == "waiting"]
        with transaction.atomic(savepoint=False):
            Run.objects.select_for_update().filter(pk=self.run.pk).values_list("pk", flat=True).first()
            resolved = NodeRun.objects.filter(run_id=self.run.pk, node_id__in=waiting).exclude(
                status=NodeRunStatus.WAITING
            )
            if resolved.exists():
                return False
            events.transition_run(
                self.run, RunStatus.WAITING, data={"waiting_for": waiting}, lease_owner="", lease_expires_at=None
            )
        return True

    # -- finishing --------------------------------------------------------------------------------
    def _succeed(self) -> None:
        outputs = {
            node_id: self.node_runs[node_id].output
            for node_id in self.sinks
            if self.node_runs[node_id].status == NodeRunStatus.SUCCEEDED
        }
        from .services import artifact_prepare

        if self.run_stopped:
            raise events.RunFinished(self.run_stopped, RunStatus.SUCCEEDED)
        if self.lease_lost:
            return
        # One transaction for result.json and the final status (no savepoint: transition_run raises
        # IllegalTransition only after writing nothing, so catching it here keeps the transaction usable).
        with transaction.atomic(savepoint=False):
            result = artifact_prepare(
                run=self.run, name="result.json", content=outputs, content_type="application/json"
            )
            buffer = events.Deferred.active(self.run.pk)
            if buffer is not None:  # nothing refers to result.json by id: insert it with the rest
                buffer.add_artifact(result)
            else:
                result.save()
            try:
                events.transition_run(self.run, RunStatus.SUCCEEDED, outputs=outputs)
            except IllegalTransition:
                # Someone else ended the run first (a cancel): their status stands.
                self._refresh()
            else:
                after_finish(self.run)

    def _finish(self, status: str, **fields: Any) -> None:
        if self.lease_lost:
            return
        try:
            finish_run(self.run, status, **fields)
        except IllegalTransition:
            # Someone else ended the run first (a cancel): their status stands.
            self._refresh()


class _RunFailed(Exception):
    """The run cannot go on; the message becomes ``Run.error``."""


def artifact_reference(artifact: Any) -> dict[str, Any]:
    return {
        "artifact_id": artifact.pk,
        "id": artifact.pk,
        "name": artifact.name,
        "content_type": artifact.content_type,
        "size": artifact.size,
        "sha256": artifact.sha256,
    }


def _locked_runs(run_ids: list[int], *, skip_locked: bool = False) -> list[Run]:
    """The runs, read FOR UPDATE in the caller's transaction. The pinned version comes from a
    per-process cache (versions never change), not from a join; no ORDER BY (Run's default one is
    needless work on a primary-key lookup)."""
    query = Run.objects.select_for_update(of=("self",), skip_locked=skip_locked).select_related("workflow__workspace")
    return list(query.filter(pk__in=run_ids).order_by())


def execute_run(run_id: int, *, bypass_limit: bool = False) -> Run | None:
    """Execute a run in this thread (the django-q2 task and ``mode="sync"`` both end here)."""
    return Engine(run_id, bypass_limit=bypass_limit).execute()


def _backlog(run: Run, exclude: list[int], limit: int) -> list[Run]:
    """Other fresh queued runs made only of inline nodes, oldest first, that no other worker holds,
    read FOR UPDATE: a backlog this worker may take along with ``run`` (itself such a run)."""
    if limit <= 0 or not _chunkable(run):
        return []
    # Pick by version without locking (other queued runs may have real work: they are left alone,
    # unlocked), then lock the picked ones, skipping any another worker holds.
    queued = (
        Run.objects.filter(status=RunStatus.QUEUED, rerun_of__isnull=True)
        .exclude(pk__in=exclude)
        .order_by("id")
        .values_list(
            "pk", "version_id", "workflow__max_concurrent_runs", "workflow__workspace__default_max_concurrent_runs"
        )
    )
    unlimited = not settings.GW_DEFAULT_MAX_CONCURRENT_RUNS
    picked = [
        pk
        for pk, version_id, workflow_limit, workspace_limit in queued[: limit * 4]
        if not workflow_limit and not workspace_limit and unlimited and _inline_version(version_id)
    ]
    if not picked:
        return []
    return [other for other in _locked_runs(picked[:limit], skip_locked=True) if _chunkable(other)]


def _chunkable(run: Run) -> bool:
    """A fresh queued run of a graph made only of inline nodes, not under a concurrency limit."""
    if run.status != RunStatus.QUEUED or run.rerun_of_id or concurrency_limit(run):
        return False
    return _inline_version(run.version_id)


def execute_runs(run_ids: list[int], *, backlog: int = 0) -> list[Run | None]:
    """Execute several runs, started together (``run_start_many``), in this worker.

    The fresh queued runs among them take their leases and run their first step in one shared
    transaction, whose writes go out in one statement per table (a run made only of inline nodes
    is finished right there): one commit for the whole chunk instead of one per run. Runs that go
    on after their first step (a node in a thread, a retry) then continue concurrently, one thread
    each. Anything else (a run another worker holds, a rerun, a resumed or recovered run, a
    workflow with a concurrency limit) is executed alone, as ``execute_run`` would. A database
    error in the shared transaction rolls it all back, and every run is then executed alone.

    ``backlog``: when the (first) run is a fresh one made only of inline nodes, also take up to this
    many other such runs still queued, as a chunk would have held them (the single-start task does:
    under load, a worker clears a backlog of cheap runs a chunk at a time; each of their own queue
    messages then finds its run finished and does nothing). Only the given runs are returned."""
    run_ids = list(dict.fromkeys(run_ids))
    asked = list(run_ids)
    started: list[tuple[Engine, list[Attempt] | None]] = []
    alone: list[int] = []
    try:
        with transaction.atomic():
            batch = events.Batch()
            taken = {run.pk: run for run in _locked_runs(run_ids, skip_locked=True)}
            if backlog and run_ids[0] in taken:
                extra = _backlog(taken[run_ids[0]], run_ids, backlog)
                taken.update({run.pk: run for run in extra})
                run_ids += [run.pk for run in extra]
            for run_id in run_ids:
                run = taken.get(run_id)
                if run is not None and run.status in RUN_FINAL:
                    continue  # finished already (taken along by another worker's chunk): nothing to do
                if run is None or run.status != RunStatus.QUEUED or run.rerun_of_id or concurrency_limit(run):
                    alone.append(run_id)
                    continue
                engine = Engine(run_id)
                with events.Deferred(batch) as buffer:
                    if engine._take(run, buffer) is None:
                        continue
                    started.append((engine, engine._first_step(run)))
            batch.write()
    except Exception:
        logger.exception("Runs %s: the shared first step failed; executing each run alone", run_ids)
        for engine, _ in started:
            engine.stop_watch.set()
        started, alone = [], asked  # the backlog taken along is still queued, with its own messages
    for engine, launch in started:
        if launch is None:  # it ended in its first step (a watcher may have started meanwhile)
            engine.stop_watch.set()
    # The commit is behind us: go on with the runs that did not finish in their first step.
    going_on = [(engine, launch) for engine, launch in started if launch is not None]
    threads = [
        threading.Thread(target=_go_on_in_thread, args=(engine, launch), name=f"run-{engine.run_id}", daemon=True)
        for engine, launch in going_on[1:]
    ]
    for thread in threads:
        thread.start()
    if going_on:
        engine, launch = going_on[0]
        engine._protected(lambda: launch)
    results = {engine.run_id: engine.run for engine, _ in started}
    for run_id in alone:
        results[run_id] = execute_run(run_id)
    for thread in threads:
        thread.join()
    return [results.get(run_id) for run_id in asked]


def _go_on_in_thread(engine: Engine, launch: list[Attempt]) -> None:
    try:
        engine._protected(lambda: launch)
    finally:
        connections.close_all()
