"""Helpers for the browser tests: a real daphne + q-cluster on the test database, and Chromium.

The server processes read the same (transactional) test database as the test, so objects the
test makes are visible to the pages and runs started from the pages really execute in the
q-cluster. Playwright drives Debian's Chromium; it never downloads a browser.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the server processes: this test run's settings, pointed at the test database."""
    db = connection.settings_dict
    env = dict(os.environ)
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or "postgres"
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        host = db.get("HOST") or "127.0.0.1"
        port = db.get("PORT") or 5432
        env["DATABASE_URL"] = f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"
    env.update(
        {
            "DATA_DIR": str(settings.DATA_DIR),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "SSRF_ALLOWLIST": "127.0.0.1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "Q_WORKERS": "2",
            "LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra or {})
    return env


class Servers:
    """daphne on a free loopback port plus a q-cluster worker, both stopped by :meth:`stop`."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=server_env(), stdout=log, stderr=subprocess.STDOUT
        )
        process.log = log
        self.processes.append(process)

    def start(self) -> Servers:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env=server_env(),
            check=True,
            timeout=120,
        )
        self._spawn("daphne", ["-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"])
        self._spawn("qcluster", ["manage.py", "qcluster"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with suppress(OSError):
                with urllib.request.urlopen(self.url + "/health/", timeout=2) as response:
                    if response.status == 200:
                        return self
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(0.3)
        self.stop()
        logs = "\n".join(
            (self.log_dir / f"{n}.log").read_text(errors="replace")[-3000:] for n in ("daphne", "qcluster")
        )
        raise RuntimeError(f"The test servers did not start:\n{logs}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            process.log.close()
        self.processes.clear()
