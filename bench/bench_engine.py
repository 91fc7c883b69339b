"""Engine overhead: a 40-node chain of ``template`` nodes, on SQLite and on PostgreSQL.

Each database section runs in its own subprocess against a throwaway database (settings are read
before ``django.setup()``). Keys: ``engine.<db>.node_overhead_ms_p50/p99`` (time per node: the gap
between consecutive nodes finishing, i.e. everything the engine does per node), ``engine.<db>.
orm_create_ms_p50`` (a bare ``Model.objects.create`` measured in the same process), and
``engine.<db>.chain40_seconds`` (median wall time of a whole 40-node run, started to finished).
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAIN = 40
RUNS = 12
PG_URL = os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure() -> dict[str, float]:
    """Inside the subprocess: migrate the throwaway database, then time the engine."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from accounts.services import personal_workspace, user_create
    from runs.models import RunEvent
    from runs.services import run_start
    from workflows.models import Workflow, WorkflowVersion

    user = user_create(username=f"bench{uuid.uuid4().hex[:6]}", password="bench-password-1")
    workspace = personal_workspace(user)
    nodes = [{"id": "n0", "type": "template", "config": {"template": "{{ inputs.word }}"}}] + [
        {"id": f"n{i}", "type": "template", "config": {"template": f"{{{{ nodes.n{i - 1}.output }}}}."}}
        for i in range(1, CHAIN)
    ]
    edges = [{"source": f"n{i - 1}", "target": f"n{i}"} for i in range(1, CHAIN)]
    workflow = Workflow.objects.create(workspace=workspace, name="chain", slug="chain", created_by=user)
    WorkflowVersion.objects.create(workflow=workflow, number=1, definition={"nodes": nodes, "edges": edges})

    gaps: list[float] = []
    totals: list[float] = []
    for i in range(RUNS + 2):
        started = time.perf_counter()
        run = run_start(workflow=workflow, user=user, inputs={"word": "go"}, mode="sync")
        elapsed = time.perf_counter() - started
        assert run.status == "succeeded", run.error
        if i < 2:
            continue  # warm-up: caches, compiled templates, connections
        totals.append(elapsed)
        finished = sorted(run.node_runs.values_list("finished_at", flat=True))
        gaps += [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(finished)]

    run = run.__class__.objects.first()
    creates: list[float] = []
    for i in range(300):
        started = time.perf_counter()
        RunEvent.objects.create(run=run, seq=100000 + i, type="bench", data={"i": i})
        creates.append((time.perf_counter() - started) * 1000)
    return {
        "node_overhead_ms_p50": statistics.median(gaps),
        "node_overhead_ms_p99": _percentile(gaps, 0.99),
        "orm_create_ms_p50": statistics.median(creates),
        "chain40_seconds": statistics.median(totals),
    }


def _section(database_url: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as data_dir:
        env = {**os.environ, "DATA_DIR": data_dir, "LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        env["DATABASE_URL"] = database_url or f"sqlite:///{data_dir}/bench.sqlite3"
        out = subprocess.run(
            [sys.executable, __file__, "--measure"], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"bench_engine failed:\n{out.stdout}\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def run(results: dict[str, float]) -> None:
    figures = _section("")
    results.update({f"engine.sqlite.{k}": v for k, v in figures.items()})
    name = f"gw_bench_engine_{uuid.uuid4().hex[:8]}"
    try:
        _pg(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"   PostgreSQL not reachable at {PG_URL}: {exc}; skipping its figures")
        return
    try:
        figures = _section(f"{PG_URL}/{name}")
        results.update({f"engine.postgresql.{k}": v for k, v in figures.items()})
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    if "--measure" in sys.argv:
        print(json.dumps(measure()))
    else:
        results: dict[str, float] = {}
        run(results)
        for key, value in sorted(results.items()):
            print(f"{key:<42} {value:.3f}")
