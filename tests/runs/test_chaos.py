"""The fault test: a real q-cluster is killed with SIGKILL in the middle of runs, over repeated trials.

After each kill a fresh cluster starts and the reaper runs (as its schedule would): every run must
end (none lost, none stuck in running, none retried forever) and no node that finished is executed
again. ``CHAOS_TRIALS`` sets the number of trials (CI: 3, ``make chaos``: 20).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from runs.models import NodeRun, Run
from runs.services import run_start, run_start_many
from runs.tasks import reap_runs

from .conftest import chain

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRIALS = int(os.environ.get("CHAOS_TRIALS", "3"))
RUNS_PER_TRIAL = 3
NODES_PER_RUN = 5
LEASE_SECONDS = 3
WORKER = Path(__file__).with_name("chaos_worker.py")


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Cluster:
    def __init__(self, log: Path):
        env = {
            **os.environ,
            "DATABASE_URL": _database_url(),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "GW_LEASE_SECONDS": str(LEASE_SECONDS),
            "GW_HEARTBEAT_SECONDS": "1",
            "Q_WORKERS": "2",
            "LOG_LEVEL": "WARNING",
        }
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)], env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def kill(self) -> None:
        """SIGKILL the cluster and its workers (the process group this test started)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.log.close()


def wait_until(predicate, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
def test_kill_9_the_worker_mid_run(make_workflow, user, tmp_path, settings, batch):
    """``batch``: the runs of each trial are started together (``run_start_many``), so a worker
    executes them as one chunk (``runs.tasks.execute_runs``) and the kill hits the whole chunk."""
    from django_q.brokers import get_broker

    get_broker().purge_queue()  # stale messages from earlier tests would only slow the cluster down
    effects = tmp_path / "effects.txt"
    nodes = [
        {"id": f"n{i}", "type": "test_effect", "config": {"path": str(effects), "seconds": 0.3}}
        for i in range(NODES_PER_RUN)
    ]
    workflow = make_workflow(nodes, chain(*nodes))
    log = tmp_path / "cluster.log"
    all_runs: list[int] = []
    rng = random.Random(1234)

    for trial in range(TRIALS):
        cluster = Cluster(log)
        try:
            if batch:
                runs = [run.pk for run in run_start_many(workflow=workflow, user=user, inputs=[{}] * RUNS_PER_TRIAL)]
            else:
                runs = [run_start(workflow=workflow, user=user).pk for _ in range(RUNS_PER_TRIAL)]
            all_runs += runs
            wait_until(
                lambda runs=runs: NodeRun.objects.filter(run_id__in=runs, status="succeeded").exists(),
                60,
                f"trial {trial}: the cluster to start executing (see {log})",
            )
            time.sleep(rng.uniform(0.0, 0.8))  # land the kill at a different point each trial
        finally:
            cluster.kill()
        assert (
            Run.objects.filter(pk__in=runs, status="running").exists()
            or Run.objects.filter(pk__in=runs, status="queued").exists()
        ), "the kill landed after every run finished; nothing was tested"

        cluster = Cluster(log)
        try:
            # The reaper's schedule, compressed: run it until every run of the trial has ended.
            def finished(runs=runs) -> bool:
                reap_runs(queued_after_seconds=2)
                return not Run.objects.filter(pk__in=runs).active().exists()

            wait_until(finished, 90, f"trial {trial}: every run to finish (see {log})", step=0.5)
        finally:
            cluster.kill()

    runs = Run.objects.filter(pk__in=all_runs)
    assert runs.count() == TRIALS * RUNS_PER_TRIAL  # none lost
    assert not runs.filter(status__in=["running", "queued", "waiting"]).exists()  # none stuck
    assert all(run.attempt <= settings.GW_MAX_RUN_ATTEMPTS for run in runs)  # none retried forever
    assert {run.status for run in runs} == {"succeeded"}, [(r.pk, r.status, r.error) for r in runs]
    assert runs.filter(attempt__gt=1).exists()  # at least one run really was recovered

    executions = [line.split() for line in effects.read_text().splitlines()]
    per_attempt = Counter((int(run_id), node_id, int(attempt)) for run_id, node_id, attempt, _ in executions)
    assert max(per_attempt.values()) == 1  # no attempt executed twice (no duplicate delivery ran)
    for node_run in NodeRun.objects.filter(run_id__in=all_runs):
        assert node_run.status == "succeeded"
        attempts = [a for (r, n, a) in per_attempt if r == node_run.run_id and n == node_run.node_id]
        # Every execution happened at or before the attempt that succeeded: nothing ran after.
        assert attempts and max(attempts) == node_run.attempt
        assert len(attempts) <= node_run.attempt
