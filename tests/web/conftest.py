"""Web page fixtures: signed-in clients and a small workflow made through the real services."""

from __future__ import annotations

import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client

from runs import services as run_services
from workflows import services as workflow_services

DEFINITION: dict[str, Any] = {
    "format": "graphwright/v1",
    "name": "Greeter",
    "tags": ["demo", "web"],
    "inputs": {"topic": {"type": "string", "required": True}},
    "nodes": [
        {"id": "greet", "type": "template", "name": "Greet", "config": {"template": "Hello {{ inputs.topic }}"}},
        {"id": "shout", "type": "template", "config": {"template": "{{ nodes.greet.output | upper }}"}},
    ],
    "edges": [{"source": "greet", "target": "shout"}],
}


@pytest.fixture
def client_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def other_client(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def workflow(workspace, user):
    return workflow_services.workflow_create(
        workspace=workspace, user=user, name="Greeter", definition=DEFINITION, description="Says hello"
    )


@pytest.fixture
def finished_run(workflow, user):
    return run_services.run_start(workflow=workflow, user=user, inputs={"topic": "world"}, mode="sync")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append(self.headers.get("Authorization", ""))
        status = 401 if self.path.startswith("/deny") else 200
        if self.path.startswith("/slow"):  # /slow?seconds=N holds the response, so a run stays busy
            seconds = float(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("seconds", ["2"])[0])
            time.sleep(seconds)
        body = b'{"ok": true, "topic": "lighthouses"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback(settings):
    """A real HTTP server on 127.0.0.1 (allow-listed for the SSRF guard); ``.seen`` holds the auth headers."""
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test shows what the servers logged and where its runs stood."""
    outcome = yield
    report = outcome.get_result()
    servers = item.funcargs.get("servers") if hasattr(item, "funcargs") else None
    if report.when != "call" or not report.failed or servers is None:
        return
    for name in ("daphne", "qcluster"):
        log = servers.log_dir / f"{name}.log"
        if log.exists():
            report.sections.append((f"{name}.log (tail)", log.read_text(errors="replace")[-6000:]))
    from runs.models import Run

    lines = []
    for run in Run.objects.order_by("-pk")[:5]:
        nodes = ", ".join(f"{n.node_id}={n.status}" for n in run.node_runs.all())
        lines.append(f"run {run.pk} {run.status} seq={run.event_seq} [{nodes}] {run.error[:200]}")
    report.sections.append(("latest runs", "\n".join(lines)))
