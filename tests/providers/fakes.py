"""Loopback servers that speak the wire protocols of the cloud LLM providers.

Only the providers' cloud APIs are faked, and only at the HTTP level: the real SDKs (through the real
LangChain integrations) talk to these servers. Each server records every request (path, headers,
JSON body) and answers from a script: queue errors (``fail(429)``), tool calls or texts; with nothing
queued it answers ``default_text``. Streaming follows each protocol: OpenAI and Anthropic and Gemini
use server-sent events, Ollama newline-delimited JSON.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "args", "id"}]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_per_chunk: float = 0.0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeProvider:
    """One loopback server for one protocol: ``openai``, ``anthropic``, ``gemini`` or ``ollama``."""

    def __init__(self, protocol: str, *, default_text: str = "Hello from the fake provider.") -> None:
        self.protocol = protocol
        self.default_text = default_text
        self.script: list[Reply] = []
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> FakeProvider:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def root(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        """What a credential's base_url should be for this protocol."""
        return f"{self.root}/v1" if self.protocol == "openai" else self.root

    # -- scripting ------------------------------------------------------------------------------
    def reply(self, text: str = "", *, tool_calls: list[dict[str, Any]] | None = None, delay: float = 0.0) -> None:
        with self.lock:
            self.script.append(Reply(text=text, tool_calls=tool_calls or [], delay_per_chunk=delay))

    def fail(self, status: int, *, retry_after: str | None = None) -> None:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        with self.lock:
            self.script.append(Reply(status=status, headers=headers))

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.pop(0) if self.script else Reply(text=self.default_text)

    def chat_requests(self) -> list[Request]:
        return [r for r in self.requests if r.method == "POST"]


def _words(text: str) -> list[str]:
    """Split text into streaming pieces that join back to the text."""
    parts: list[str] = []
    for i, word in enumerate(text.split(" ")):
        parts.append(word if i == 0 else " " + word)
    return [p for p in parts if p]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def _record(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        self.fake.requests.append(
            Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        return body

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, payload: Any, event: str | None = None) -> None:
        out = f"event: {event}\n" if event else ""
        out += f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"
        self.wfile.write(out.encode())
        self.wfile.flush()

    def _error(self, reply: Reply) -> None:
        protocol = self.fake.protocol
        message = {401: "Invalid API key", 429: "Rate limit reached", 500: "Internal error"}.get(reply.status, "Error")
        if protocol == "anthropic":
            kind = {401: "authentication_error", 429: "rate_limit_error"}.get(reply.status, "api_error")
            payload: Any = {"type": "error", "error": {"type": kind, "message": message}}
        elif protocol == "gemini":
            state = {401: "UNAUTHENTICATED", 429: "RESOURCE_EXHAUSTED"}.get(reply.status, "INTERNAL")
            payload = {"error": {"code": reply.status, "message": message, "status": state}}
        elif protocol == "ollama":
            payload = {"error": message}
        else:
            payload = {"error": {"message": message, "type": "error", "code": str(reply.status)}}
        self._json(reply.status, payload, reply.headers)

    # -- routes ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record()
        if self._unauthorized():
            return
        protocol = self.fake.protocol
        if protocol == "gemini":
            self._json(200, {"models": [{"name": "models/gemini-2.0-flash"}, {"name": "models/gemini-1.5-pro"}]})
        elif protocol == "ollama":
            self._json(200, {"models": [{"name": "llama3.2:latest"}]})
        else:
            self._json(200, {"object": "list", "data": [{"id": "model-a"}, {"id": "model-b"}]})

    def _unauthorized(self) -> bool:
        """GET /models with a key of "bad" answers 401 (for credential tests)."""
        values = " ".join(self.headers.get(h, "") for h in ("authorization", "x-api-key", "x-goog-api-key"))
        if "bad" in values.split() or values.endswith("bad") or "Bearer bad" in values:
            self._error(Reply(status=401))
            return True
        return False

    def do_POST(self) -> None:
        body = self._record() or {}
        reply = self.fake.next_reply()
        if reply.status != 200:
            self._error(reply)
            return
        protocol = self.fake.protocol
        if protocol == "openai":
            self._openai(body, reply)
        elif protocol == "anthropic":
            self._anthropic(body, reply)
        elif protocol == "gemini":
            self._gemini(reply, stream="streamGenerateContent" in self.path)
        else:
            self._ollama(body, reply)

    # -- OpenAI ---------------------------------------------------------------------------------
    def _openai(self, body: dict[str, Any], reply: Reply) -> None:
        model = body.get("model", "model-a")
        prompt_tokens, completion_tokens = 11, max(1, len(_words(reply.text)))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        tool_calls = [
            {
                "id": call.get("id", f"call_{i}"),
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("args", {}))},
            }
            for i, call in enumerate(reply.tool_calls)
        ]
        finish = "tool_calls" if tool_calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            self._json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                },
            )
            return
        self._start_stream("text/event-stream")
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self._sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for piece in _words(reply.text):
            time.sleep(reply.delay_per_chunk)
            self._sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        for i, call in enumerate(tool_calls):
            delta = {"tool_calls": [{"index": i, **call}]}
            self._sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse({**base, "choices": [], "usage": usage})
        self._sse("[DONE]")

    # -- Anthropic ------------------------------------------------------------------------------
    def _anthropic(self, body: dict[str, Any], reply: Reply) -> None:
        model = body.get("model", "claude")
        input_tokens, output_tokens = 13, max(1, len(_words(reply.text)))
        blocks: list[dict[str, Any]] = []
        if reply.text:
            blocks.append({"type": "text", "text": reply.text})
        for i, call in enumerate(reply.tool_calls):
            blocks.append(
                {"type": "tool_use", "id": call.get("id", f"toolu_{i}"), "name": call["name"], "input": call["args"]}
            )
        stop_reason = "tool_use" if reply.tool_calls else "end_turn"
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        if not body.get("stream"):
            self._json(200, message)
            return
        self._start_stream("text/event-stream")
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }
        self._sse({"type": "message_start", "message": start}, "message_start")
        index = 0
        if reply.text:
            self._sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
            for piece in _words(reply.text):
                time.sleep(reply.delay_per_chunk)
                self._sse(
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta",
                )
            self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            index = 1
        for call in blocks[index:]:
            self._sse(
                {"type": "content_block_start", "index": index, "content_block": {**call, "input": {}}},
                "content_block_start",
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(call["input"])}
            self._sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
            self._sse({"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")

    # -- Gemini ---------------------------------------------------------------------------------
    def _gemini(self, reply: Reply, *, stream: bool) -> None:
        prompt_tokens, output_tokens = 7, max(1, len(_words(reply.text)))

        def chunk(parts: list[dict[str, Any]], finish: str | None, usage: bool) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-2.0-flash"}
            if usage:
                payload["usageMetadata"] = {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": output_tokens,
                    "totalTokenCount": prompt_tokens + output_tokens,
                }
            return payload

        calls = [{"functionCall": {"name": c["name"], "args": c.get("args", {})}} for c in reply.tool_calls]
        if not stream:
            parts = ([{"text": reply.text}] if reply.text else []) + calls
            self._json(200, chunk(parts, "STOP", True))
            return
        self._start_stream("text/event-stream")
        pieces = _words(reply.text)
        for i, piece in enumerate(pieces):
            time.sleep(reply.delay_per_chunk)
            last = i == len(pieces) - 1 and not calls
            self._sse(chunk([{"text": piece}], "STOP" if last else None, last))
        if calls or not pieces:
            self._sse(chunk(calls, "STOP", True))

    # -- Ollama ---------------------------------------------------------------------------------
    def _ollama(self, body: dict[str, Any], reply: Reply) -> None:
        model = body.get("model", "llama3.2")
        now = "2026-01-01T00:00:00Z"
        calls = [{"function": {"name": c["name"], "arguments": c.get("args", {})}} for c in reply.tool_calls]
        final = {
            "model": model,
            "created_at": now,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": max(1, len(_words(reply.text))),
        }
        if body.get("stream") is False:
            message = {"role": "assistant", "content": reply.text}
            if calls:
                message["tool_calls"] = calls
            self._json(200, {**final, "message": message})
            return
        self._start_stream("application/x-ndjson")
        for piece in _words(reply.text):
            time.sleep(reply.delay_per_chunk)
            line = {
                "model": model,
                "created_at": now,
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            self.wfile.write((json.dumps(line) + "\n").encode())
            self.wfile.flush()
        if calls:
            line = {
                "model": model,
                "created_at": now,
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": False,
            }
            self.wfile.write((json.dumps(line) + "\n").encode())
        self.wfile.write((json.dumps(final) + "\n").encode())
        self.wfile.flush()
