"""Throughput through the real queue: one-node runs per second, django-q2 with the Redis broker.

A subprocess sets up a throwaway PostgreSQL database and a Redis-brokered q-cluster of its own
(unique cluster name and prefix). ``BENCH_QUEUE_CLIENTS`` concurrent clients create one-node runs
while the cluster executes them; each pass is timed from the first enqueue until the last run has
succeeded. Two passes over the same cluster:

- ``queue.redis.runs_per_second``: the clients start runs in batches of ``BENCH_QUEUE_BATCH``
  (``run_start_many``, as ``POST /workflows/{id}/runs/batch/`` does); workers execute them in
  chunks with shared writes (``runs.tasks.execute_runs``).
- ``queue.redis.single_runs_per_second``: every run started alone (``run_start``, one task each),
  as ``POST /workflows/{id}/runs/`` does.
- ``queue.redis.single_backlog_runs_per_second``: a burst of single starts already queued when a
  fresh cluster starts, timed from its first finished run to its last: what the workers alone do
  with single starts (a worker takes a backlog of inline runs along, a chunk at a time).

Each pass also reports the rate at which its clients created the runs (``…enqueue_per_second``):
when it is close to the execution rate, the producers set the pace, not the queue.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")
RUNS = int(os.environ.get("BENCH_QUEUE_RUNS", "400"))
# Concurrent clients creating runs (as a load generator would): one client alone cannot create runs
# as fast as the cluster executes them, and then the figure would measure run_start, not the queue.
CLIENTS = int(os.environ.get("BENCH_QUEUE_CLIENTS", "2"))
BATCH = int(os.environ.get("BENCH_QUEUE_BATCH", "50"))
WORKERS = int(os.environ.get("BENCH_QUEUE_WORKERS", str(max(2, (os.cpu_count() or 2) * 2))))


def measure() -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.services import personal_workspace, user_create
    from runs.models import Run
    from runs.services import run_start, run_start_many
    from workflows.models import Workflow, WorkflowVersion

    user = user_create(username="bench", password="bench-password-1")
    workflow = Workflow.objects.create(workspace=personal_workspace(user), name="one", slug="one", created_by=user)
    definition = {"nodes": [{"id": "only", "type": "template", "config": {"template": "{{ inputs.i }}"}}], "edges": []}
    WorkflowVersion.objects.create(workflow=workflow, number=1, definition=definition)

    def start_cluster() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            env={**os.environ, "Q_WORKERS": str(WORKERS)},
            stdout=None if os.environ.get("BENCH_QUEUE_DEBUG") else subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_QUEUE_DEBUG") else subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop_cluster(cluster: subprocess.Popen) -> None:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(20)

    cluster = start_cluster()
    try:

        def drain(run_ids: list[int], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while Run.objects.filter(pk__in=run_ids, status="succeeded").count() < len(run_ids):
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not finish through the queue")
                time.sleep(0.02)

        warm = [run_start(workflow=workflow, user=user, inputs={"i": i}).pk for i in range(2 * WORKERS)]
        drain(warm, 120)
        import threading

        from django.db import connections

        def timed(create: Any) -> tuple[float, float, list[int]]:
            """Clients call ``create(numbers)`` concurrently; (runs/s, enqueues/s, run ids)."""
            ids: list[int] = []
            started = time.perf_counter()

            def client(numbers: list[int]) -> None:
                try:
                    ids.extend(create(numbers))
                finally:
                    connections.close_all()

            threads = [threading.Thread(target=client, args=(list(range(c, RUNS, CLIENTS)),)) for c in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            enqueued = time.perf_counter() - started
            if len(ids) != RUNS:
                raise RuntimeError("a client failed to create its runs")
            drain(ids, 600)
            return RUNS / (time.perf_counter() - started), RUNS / enqueued, ids

        def batches(numbers: list[int]) -> list[int]:
            created: list[int] = []
            for i in range(0, len(numbers), BATCH):
                chunk = numbers[i : i + BATCH]
                runs = run_start_many(workflow=workflow, user=user, inputs=[{"i": n} for n in chunk])
                created += [run.pk for run in runs]
            return created

        def singles(numbers: list[int]) -> list[int]:
            return [run_start(workflow=workflow, user=user, inputs={"i": n}).pk for n in numbers]

        batched, batched_enqueue, ids = timed(batches)
        single, single_enqueue, _ = timed(singles)

        # A burst: RUNS single starts already queued (a webhook storm while workers were busy),
        # timed from the first run the cluster finishes to the last: the workers alone.
        stop_cluster(cluster)
        burst = singles(list(range(RUNS)))
        cluster = start_cluster()
        drain(burst[:1], 120)
        first = time.perf_counter()
        drain(burst, 600)
        backlog = (RUNS - 1) / (time.perf_counter() - first)
        if os.environ.get("BENCH_QUEUE_DEBUG"):
            import statistics

            rows = Run.objects.filter(pk__in=ids).values_list("created_at", "started_at", "finished_at")
            waits = [(s - c).total_seconds() for c, s, f in rows]
            works = [(f - s).total_seconds() for c, s, f in rows]
            print(f"queue wait p50 {statistics.median(waits):.3f}s, execution p50 {statistics.median(works):.3f}s")
    finally:
        stop_cluster(cluster)
    return {
        "runs_per_second": batched,
        "enqueue_per_second": batched_enqueue,
        "single_runs_per_second": single,
        "single_enqueue_per_second": single_enqueue,
        "single_backlog_runs_per_second": backlog,
        "workers": WORKERS,
        "clients": CLIENTS,
        "batch": BATCH,
    }


def run(results: dict[str, float]) -> None:
    import psycopg

    name = f"gw_bench_queue_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"   PostgreSQL not reachable at {PG_URL}: {exc}; skipping")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="gw-bench-q-") as data_dir:
            env = {
                **os.environ,
                "DATA_DIR": data_dir,
                "DATABASE_URL": f"{PG_URL}/{name}",
                "REDIS_URL": REDIS_URL,
                "Q_CLUSTER_NAME": name,
                "CHANNELS_PREFIX": name,
                "LOG_LEVEL": "WARNING",
            }
            out = subprocess.run(
                [sys.executable, __file__, "--measure"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"bench_queue failed:\n{out.stdout}\n{out.stderr}")
            figures = json.loads(out.stdout.strip().splitlines()[-1])
        for key in (
            "runs_per_second",
            "enqueue_per_second",
            "single_runs_per_second",
            "single_enqueue_per_second",
            "single_backlog_runs_per_second",
            "workers",
            "clients",
            "batch",
        ):
            results[f"queue.redis.{key}"] = figures[key]
    finally:
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(json.dumps(measure()))
    else:
        results: dict[str, float] = {}
        run(results)
        for key, value in sorted(results.items()):
            print(f"{key:<42} {value:.3f}")
