"""A real HTTP server on loopback for the vault, SSRF and http_request tests.

Routes: ``/echo`` (any method: what arrived, minus credentials), ``/whoami`` (echoes the
Authorization header, to prove outputs scrub it), ``/status/<code>``, ``/redirect?to=<url>``,
``/json``, ``/text``, ``/big?bytes=N[&length=0]``, ``/hang`` (holds the response until released),
``/flaky?key=K&fail=N`` (503 for the first N requests of K, then 200).
Every request is recorded in ``server.requests`` with its headers, so tests check what was sent.
"""

from __future__ import annotations

import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LoopbackServer:
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def url(self, path: str = "/", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def last(self) -> Recorded:
        return self.requests[-1]

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class Handler(BaseHTTPRequestHandler):
    server_version = "Loopback/1"
    protocol_version = "HTTP/1.0"  # one response per connection; bodies without length end at close

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    @property
    def box(self) -> LoopbackServer:
        return self.server.box  # type: ignore[attr-defined]

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        self.box.requests.append(Recorded(self.command, self.path, headers, body))
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        route = parsed.path
        if route == "/echo":
            shown = {k.lower(): v for k, v in headers.items() if k.lower() not in ("authorization", "x-api-key")}
            self._json(
                200,
                {
                    "method": self.command,
                    "path": parsed.path,
                    "query": {k: v if len(v) > 1 else v[0] for k, v in query.items()},
                    "headers": shown,
                    "body": body.decode("utf-8", "replace"),
                },
            )
        elif route == "/whoami":
            self._json(200, {"authorization": headers.get("Authorization", "")})
        elif route.startswith("/status/"):
            code = int(route.rsplit("/", 1)[1])
            self._json(code, {"status": code})
        elif route == "/redirect":
            self.send_response(int(query.get("code", ["302"])[0]))
            self.send_header("Location", query["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "/json":
            self._json(200, {"hello": "world", "items": [1, 2, 3]}, content_type="application/vnd.api+json")
        elif route == "/text":
            self._send(200, "plain text ✓".encode(), "text/plain; charset=utf-8")
        elif route == "/cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "session=topsecretcookie; HttpOnly")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        elif route == "/big":
            size = int(query.get("bytes", ["1000"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if query.get("length", ["1"])[0] == "1":
                self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 65536
            sent = 0
            try:
                while sent < size:
                    piece = chunk[: min(len(chunk), size - sent)]
                    self.wfile.write(piece)
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif route == "/flaky":  # fails with 503 the first ``fail`` times a ``key`` is asked for
            key = query.get("key", [""])[0]
            with self.box.lock:
                self.box.counts[key] = self.box.counts.get(key, 0) + 1
                count = self.box.counts[key]
            if count <= int(query.get("fail", ["1"])[0]):
                self._json(503, {"attempt": count})
            else:
                self._json(200, {"attempt": count})
        elif route == "/hang":
            self.box.hanging.set()
            self.box.release.wait(30)
            self._send(200, b"late", "text/plain")
        else:
            self._json(404, {"error": "not found"})

    def _json(self, code: int, data: Any, content_type: str = "application/json") -> None:
        self._send(code, json.dumps(data).encode(), content_type)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def start_server(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None) -> LoopbackServer:
    httpd = ThreadingHTTPServer((host, 0), Handler)
    httpd.daemon_threads = True
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    box = LoopbackServer(httpd=httpd, thread=thread)
    httpd.box = box  # type: ignore[attr-defined]
    thread.start()
    return box
