"""API fixtures: a small test node type, workflows made through the services, clean throttles."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.choices import Role
from accounts.services import api_token_create
from workflows.nodes import NodeType, _registry, autodiscover, register


class ApiEchoNode(NodeType):
    """Returns its rendered ``value`` (test-only)."""

    name = "api_echo"
    label = "Echo (API tests)"
    config_schema = {"type": "object", "properties": {"value": {}}, "additionalProperties": False}

    def execute(self, ctx) -> Any:
        return ctx.render(ctx.config.get("value"))


@pytest.fixture(autouse=True)
def api_node_types():
    autodiscover()
    saved = dict(_registry)
    _registry.pop(ApiEchoNode.name, None)
    register(ApiEchoNode)
    yield
    _registry.clear()
    _registry.update(saved)


@pytest.fixture(autouse=True)
def _fresh_throttles():
    cache.clear()  # throttle counters live in the cache; each test starts from zero
    yield
    cache.clear()


def echo_definition(name: str = "Echo", tags: list[str] | None = None, **inputs: dict) -> dict:
    return {
        "format": "graphwright/v1",
        "name": name,
        "tags": tags or [],
        "inputs": inputs or {"text": {"type": "string", "required": True}},
        "nodes": [
            {"id": "first", "type": "api_echo", "config": {"value": "{{ inputs.text }}"}},
            {"id": "second", "type": "api_echo", "config": {"value": "{{ nodes.first.output }}!"}},
        ],
        "edges": [{"source": "first", "target": "second"}],
    }


@pytest.fixture
def make_workflow(user, workspace):
    from workflows.services import workflow_create

    def make(name: str = "Echo", *, owner=None, tags=None, definition=None, **fields):
        owner = owner or user
        from accounts.services import personal_workspace

        ws = personal_workspace(owner) if owner != user else workspace
        return workflow_create(
            workspace=ws, user=owner, name=name, definition=definition or echo_definition(name, tags), **fields
        )

    return make


@pytest.fixture
def workflow(make_workflow):
    return make_workflow("Echo", tags=["demo"])


@pytest.fixture
def client_for():
    """client_for(user) -> an APIClient authenticated with a new token of that user."""

    def make(member) -> APIClient:
        client = APIClient()
        _, key = api_token_create(user=member, name="tests")
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return make


@pytest.fixture
def member_client(make_member, client_for):
    """member_client(role) -> (user, client) for a new member of the fixture workspace."""

    def make(role: str = Role.VIEWER):
        member = make_member(role)
        return member, client_for(member)

    return make


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, getattr(response, "data", response.content))
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "fields"} <= set(body["error"])
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


class Loopback:
    """A real HTTP server on 127.0.0.1 that records requests and answers with queued statuses."""

    def __init__(self):
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.statuses: list[int] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = server.statuses.pop(0) if server.statuses else 200
                payload = json.dumps({"ok": status < 400}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback(settings):
    """A loopback server the SSRF guard lets through (127.0.0.1 is on the allowlist for this test)."""
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    server = Loopback()
    yield server
    server.close()
