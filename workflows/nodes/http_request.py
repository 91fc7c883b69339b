"""``http_request``: call an HTTP API, safely by default.

Every connection goes through the SSRF guard (:mod:`providers.ssrf`), redirects included. The
response is streamed and reading stops past ``max_response_bytes``. Secrets from the credential
go into the request headers only: outputs and logs show header names, and sensitive response
headers (``Set-Cookie``) are redacted.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import httpx

from providers.credentials import (
    HTTP_KINDS,
    CredentialNotFound,
    credential_mark_used,
    credential_resolve,
    credential_secret,
    http_auth_headers,
)
from providers.ssrf import BlockedDestination, GuardedTransport, check_url, unwrap_blocked
from providers.vault import VaultError
from workflows import templating

from . import register
from ._watch import watch_cancel
from .base import ConfigError, NodeCancelled, NodeContext, NodeError, NodeType

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
HARD_MAX_RESPONSE_BYTES = 100 * 1024 * 1024
REDACTED = "[redacted]"
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)


def redact_headers(headers: dict[str, str] | httpx.Headers, extra_sensitive: set[str] | None = None) -> dict[str, str]:
    """A copy of ``headers`` fit for outputs and logs: secret-bearing values replaced."""
    sensitive = SENSITIVE_HEADERS | {h.lower() for h in (extra_sensitive or set())}
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else list(headers.items())
    result: dict[str, str] = {}
    for key, value in items:
        shown = REDACTED if key.lower() in sensitive else value
        lowered = key.lower()
        result[lowered] = f"{result[lowered]}, {shown}" if lowered in result else shown
    return result


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{REDACTED}@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _scrub(value: Any, secrets: list[str]) -> Any:
    """Replace any secret that a server echoed back with a redaction marker."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


@register
class HttpRequestNode(NodeType):
    name = "http_request"
    label = "HTTP request"
    description = "Call an HTTP API. Private and metadata addresses are blocked unless allow-listed."
    category = "io"
    icon = "⇄"
    side_effects = True
    config_schema = {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "method": {"enum": list(METHODS), "default": "GET"},
            "url": {"type": "string", "minLength": 1, "description": "Template allowed."},
            "query": {"type": ["object", "string"], "description": "Query parameters (values are templates)."},
            "headers": {"type": ["object", "string"], "additionalProperties": {"type": "string"}},
            "body_type": {
                "enum": ["none", "json", "form", "raw"],
                "description": "Defaults to json when a body is given, else none.",
            },
            "body": {"description": "JSON value, form object or raw text; templates allowed."},
            "content_type": {"type": "string", "description": "Content-Type for a raw body."},
            "credential": {"type": ["string", "integer"], "description": "Credential name or id for auth."},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600, "default": 30},
            "follow_redirects": {"type": "boolean", "default": True},
            "max_redirects": {"type": "integer", "minimum": 0, "maximum": 20, "default": 5},
            "fail_on_status": {"type": "boolean", "default": True, "description": "Fail on a 4xx or 5xx status."},
            "max_response_bytes": {"type": "integer", "minimum": 1, "maximum": HARD_MAX_RESPONSE_BYTES},
            "response_format": {"enum": ["auto", "json", "text"], "default": "auto"},
            "send_idempotency_key": {"type": "boolean", "default": True},
        },
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        errors: list[ConfigError] = []
        for path, value in _template_strings(config, "config"):
            problem = templating.check_syntax(value)
            if problem:
                errors.append(ConfigError(path, f"Template error: {problem}"))
        body = config.get("body")
        body_type = _body_type(config)
        if body_type == "none" and body not in (None, "", {}):
            errors.append(ConfigError("config.body_type", "Pick a body type (json, form or raw) to send a body."))
        if body_type == "form" and body is not None and not isinstance(body, dict | str):
            errors.append(ConfigError("config.body", "A form body is an object of fields."))
        if body_type == "raw" and body is not None and not isinstance(body, str):
            errors.append(ConfigError("config.body", "A raw body is text."))
        if config.get("method", "GET") in ("GET", "HEAD") and body_type != "none":
            errors.append(
                ConfigError("config.body_type", f"{config.get('method', 'GET')} requests do not send a body.")
            )
        url = config.get("url", "")
        if isinstance(url, str) and "{" not in url and not url.lower().startswith(("http://", "https://")):
            errors.append(ConfigError("config.url", "Use an http:// or https:// URL."))
        return errors

    # -- execution ------------------------------------------------------------------------------
    def execute(self, ctx: NodeContext) -> dict[str, Any]:
        config = ctx.config
        ctx.check_cancelled()
        method = str(config.get("method") or "GET").upper()
        url = _as_text(ctx.render(config["url"]), "url").strip()
        if not url.lower().startswith(("http://", "https://")):
            raise NodeError(
                f"The URL must start with http:// or https:// (got {redact_url(url)[:200]!r}).", retryable=False
            )
        query = _as_mapping(ctx.render(config.get("query") or {}), "query")
        headers = {
            str(k): _as_text(v, f"headers.{k}")
            for k, v in _as_mapping(ctx.render(config.get("headers") or {}), "headers").items()
        }
        body_type = _body_type(config)
        request_kwargs: dict[str, Any] = {}
        if body_type != "none" and method not in ("GET", "HEAD"):
            body = ctx.render(config.get("body"))
            if body_type == "json":
                request_kwargs["json"] = body
            elif body_type == "form":
                request_kwargs["data"] = {str(k): "" if v is None else v for k, v in _as_mapping(body, "body").items()}
            else:
                request_kwargs["content"] = ("" if body is None else _as_text(body, "body")).encode("utf-8")
                headers.setdefault("Content-Type", config.get("content_type") or "text/plain; charset=utf-8")

        secrets: list[str] = []
        sensitive: set[str] = set()
        credential_ref = config.get("credential")
        if credential_ref not in (None, ""):
            try:
                credential = credential_resolve(
                    workspace_id=ctx.workspace_id, ref=credential_ref, kinds=tuple(HTTP_KINDS)
                )
                auth_headers = http_auth_headers(credential)
                secrets.append(credential_secret(credential))
            except CredentialNotFound as exc:
                raise NodeError(str(exc), retryable=False) from exc
            except VaultError as exc:
                raise NodeError(f"Credential {credential_ref!r} cannot be read: {exc}", retryable=False) from exc
            headers.update(auth_headers)
            sensitive.update(auth_headers)
            secrets.extend(v for v in auth_headers.values() if v)
            credential_mark_used(credential=credential, run_id=ctx.run_id, node_id=ctx.node_id)
        wants_key = ctx.idempotency_key and config.get("send_idempotency_key", True)
        if wants_key and not any(k.lower() == "idempotency-key" for k in headers):
            headers["Idempotency-Key"] = ctx.idempotency_key
        secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

        timeout = float(config.get("timeout") or 30)
        left = ctx.time_left()
        if left is not None:
            if left <= 0:
                raise NodeCancelled("timeout")
            timeout = min(timeout, left)
        cap = int(config.get("max_response_bytes") or DEFAULT_MAX_RESPONSE_BYTES)
        follow = bool(config.get("follow_redirects", True))
        shown_url = redact_url(url)
        ctx.log(
            f"{method} {shown_url}",
            request_headers=redact_headers(headers, sensitive),
        )

        try:
            check_url(url)  # literal hosts in spellings httpx would reject, before any network use
        except BlockedDestination as exc:
            raise NodeError(str(exc), retryable=False, data={"blocked": True}) from exc
        try:
            # Merge (not replace) the URL's own query string with the configured parameters.
            request_url = httpx.URL(url).copy_merge_params(query) if query else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise NodeError(f"Invalid URL or query: {exc}", retryable=False) from exc
        started = time.monotonic()
        transport = GuardedTransport()
        origin = (request_url.scheme, request_url.host, request_url.port)

        def strip_credentials_off_origin(request: httpx.Request) -> None:
            # httpx drops Authorization on a cross-origin redirect, but not a custom credential header.
            if (request.url.scheme, request.url.host, request.url.port) != origin:
                for name in sensitive:
                    request.headers.pop(name, None)

        client = httpx.Client(
            transport=transport,
            timeout=timeout,
            follow_redirects=follow,
            max_redirects=int(config.get("max_redirects", 5)),
            trust_env=False,
            event_hooks={"request": [strip_credentials_off_origin]},
        )
        try:
            with watch_cancel(ctx, transport.backend.abort) as watch:
                try:
                    with client.stream(method, request_url, headers=headers, **request_kwargs) as response:
                        content = _read_capped(response, cap)
                except NodeError:
                    raise
                except BlockedDestination as exc:
                    raise NodeError(str(exc), retryable=False, data={"blocked": True}) from exc
                except httpx.HTTPError as exc:
                    if watch.fired:
                        raise NodeCancelled(watch.reason) from exc
                    if isinstance(exc, httpx.TimeoutException) and ctx.time_left(1.0) <= 0.05:
                        raise NodeCancelled("timeout") from exc
                    raise _http_error(exc, shown_url, timeout) from exc
                except Exception as exc:
                    blocked = unwrap_blocked(exc)
                    if blocked is not None:
                        raise NodeError(str(blocked), retryable=False, data={"blocked": True}) from exc
                    if watch.fired:
                        raise NodeCancelled(watch.reason) from exc
                    raise
            if watch.fired:
                raise NodeCancelled(watch.reason)
        finally:
            client.close()
        elapsed_ms = int((time.monotonic() - started) * 1000)

        output: dict[str, Any] = {
            "status": response.status_code,
            "ok": response.is_success,
            "url": redact_url(str(response.url)),
            "headers": redact_headers(response.headers, sensitive),
            "elapsed_ms": elapsed_ms,
        }
        output.update(_parse_body(response, content, config.get("response_format") or "auto"))
        output = _scrub(output, secrets)
        ctx.log(f"{method} {shown_url} → {response.status_code} in {elapsed_ms} ms ({len(content)} bytes)")
        if config.get("fail_on_status", True) and response.status_code >= 400:
            retryable = response.status_code >= 500 or response.status_code in (408, 425, 429)
            raise NodeError(
                f"HTTP {response.status_code} {response.reason_phrase} from {shown_url}",
                retryable=retryable,
                data={"output": output},
            )
        return output


# -- helpers -------------------------------------------------------------------------------------
def _body_type(config: dict[str, Any]) -> str:
    if config.get("body_type"):
        return str(config["body_type"])
    return "json" if config.get("body") not in (None, "") else "none"


def _template_strings(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(path, value)] if "{" in value else []
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _template_strings(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _template_strings(v, f"{path}.{i}")]
    return []


def _as_text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | bool):
        return json.dumps(value) if isinstance(value, bool) else str(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    raise NodeError(f"{field} must render to text, not {type(value).__name__}.", retryable=False)


def _as_mapping(value: Any, field: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise NodeError(f"{field} must render to an object.", retryable=False) from exc
    if not isinstance(value, dict):
        raise NodeError(f"{field} must render to an object, not {type(value).__name__}.", retryable=False)
    return {str(k): v for k, v in value.items() if v is not None}


def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise NodeError(
            f"The response is {int(declared)} bytes, over the {cap}-byte limit (max_response_bytes).",
            retryable=False,
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise NodeError(
                f"The response is larger than the {cap}-byte limit (max_response_bytes); reading stopped.",
                retryable=False,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_body(response: httpx.Response, content: bytes, response_format: str) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    text = content.decode(response.charset_encoding or "utf-8", errors="replace")
    looks_json = content_type == "application/json" or content_type.endswith("+json")
    if response_format == "json" or (response_format == "auto" and looks_json and content):
        try:
            return {"json": json.loads(text)}
        except ValueError as exc:
            if response_format == "json":
                raise NodeError(f"The response is not valid JSON: {exc}", retryable=False) from exc
    return {"text": text}


def _http_error(exc: httpx.HTTPError, url: str, timeout: float) -> NodeError:
    if isinstance(exc, httpx.TimeoutException):
        return NodeError(f"The request to {url} timed out after {timeout:g} s ({type(exc).__name__}).")
    if isinstance(exc, httpx.TooManyRedirects):
        return NodeError(f"Too many redirects from {url}.", retryable=False)
    if isinstance(exc, httpx.ConnectError):
        return NodeError(f"Cannot connect to {url}: {exc}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return NodeError(f"Invalid URL {url}: {exc}", retryable=False)
    return NodeError(f"The request to {url} failed: {type(exc).__name__}: {exc}")
