"""http_request against a real loopback server: methods, bodies, auth, redirects, caps, SSRF, cancel."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from providers.choices import CredentialKind
from providers.credentials import credential_create
from tests.providers.loopback import start_server
from workflows.nodes import NodeCancelled, NodeContext, NodeError, get_node_type

SECRET = "bearer-Zx81-very-secret-token-value"


@pytest.fixture
def http_server():
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def allow_loopback(settings):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]


@pytest.fixture
def node():
    return get_node_type("http_request")


def make_ctx(config, *, workspace=None, **kwargs) -> NodeContext:
    kwargs.setdefault("context", {"inputs": {"name": "Ada Lovelace", "n": 3, "tags": ["a", "b"]}})
    return NodeContext(
        node_id="fetch",
        node_type="http_request",
        config=config,
        workspace_id=workspace.pk if workspace else None,
        run_id=None,
        **kwargs,
    )


def run(node, config, **kwargs):
    assert node.validate_config(config) == [], node.validate_config(config)
    return node.execute(make_ctx(config, **kwargs))


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_with_templated_url_query_and_headers(node, http_server, method):
    output = run(
        node,
        {
            "method": method,
            "url": http_server.url("/echo") + "?who={{ inputs.name | urlencode }}",
            "query": {"n": "{{ inputs.n }}", "tags": "{{ inputs.tags }}"},
            "headers": {"X-Trace": "trace-{{ inputs.n }}"},
        },
        idempotency_key="run-1:fetch",
    )
    assert output["status"] == 200 and output["ok"] is True
    echo = output["json"]
    assert echo["method"] == method
    assert echo["query"] == {"who": "Ada Lovelace", "n": "3", "tags": ["a", "b"]}
    assert echo["headers"]["x-trace"] == "trace-3"
    assert echo["headers"]["idempotency-key"] == "run-1:fetch"
    assert output["elapsed_ms"] >= 0 and output["headers"]["content-type"] == "application/json"


@pytest.mark.usefixtures("allow_loopback")
def test_head(node, http_server):
    output = run(node, {"method": "HEAD", "url": http_server.url("/echo")})
    assert output["status"] == 200 and http_server.last().method == "HEAD"
    assert output["text"] == ""


@pytest.mark.usefixtures("allow_loopback")
def test_json_body(node, http_server):
    config = {
        "method": "POST",
        "url": http_server.url("/echo"),
        "body_type": "json",
        "body": {"name": "{{ inputs.name }}", "tags": "{{ inputs.tags }}", "fixed": 1},
    }
    output = run(node, config)
    assert json.loads(output["json"]["body"]) == {"name": "Ada Lovelace", "tags": ["a", "b"], "fixed": 1}
    assert output["json"]["headers"]["content-type"] == "application/json"


@pytest.mark.usefixtures("allow_loopback")
def test_body_without_a_type_is_json(node, http_server):
    output = run(node, {"method": "POST", "url": http_server.url("/echo"), "body": {"n": "{{ inputs.n }}"}})
    assert json.loads(output["json"]["body"]) == {"n": 3}
    assert node.validate_config({"url": "http://x", "body": {"a": 1}})[0].path == "config.body_type"  # GET


@pytest.mark.usefixtures("allow_loopback")
def test_form_body(node, http_server):
    config = {
        "method": "POST",
        "url": http_server.url("/echo"),
        "body_type": "form",
        "body": {"name": "{{ inputs.name }}", "n": "{{ inputs.n }}"},
    }
    output = run(node, config)
    assert output["json"]["body"] == "name=Ada+Lovelace&n=3"
    assert output["json"]["headers"]["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.usefixtures("allow_loopback")
def test_raw_body(node, http_server):
    config = {
        "method": "PUT",
        "url": http_server.url("/echo"),
        "body_type": "raw",
        "body": "<p>{{ inputs.name }}</p>",
        "content_type": "text/html",
    }
    output = run(node, config)
    assert output["json"]["body"] == "<p>Ada Lovelace</p>"
    assert output["json"]["headers"]["content-type"] == "text/html"


@pytest.mark.usefixtures("allow_loopback")
def test_response_parsing(node, http_server):
    assert run(node, {"url": http_server.url("/json")})["json"] == {"hello": "world", "items": [1, 2, 3]}
    text = run(node, {"url": http_server.url("/text")})
    assert text["text"] == "plain text ✓" and "json" not in text
    assert run(node, {"url": http_server.url("/json"), "response_format": "text"})["text"].startswith("{")
    with pytest.raises(NodeError, match="not valid JSON"):
        run(node, {"url": http_server.url("/text"), "response_format": "json"})


@pytest.mark.usefixtures("allow_loopback")
def test_fail_on_status(node, http_server):
    with pytest.raises(NodeError, match="HTTP 404") as excinfo:
        run(node, {"url": http_server.url("/status/404")})
    assert excinfo.value.retryable is False
    assert excinfo.value.data["output"]["status"] == 404
    with pytest.raises(NodeError, match="HTTP 503") as excinfo:
        run(node, {"url": http_server.url("/status/503")})
    assert excinfo.value.retryable is True
    output = run(node, {"url": http_server.url("/status/404"), "fail_on_status": False})
    assert output["status"] == 404 and output["ok"] is False and output["json"] == {"status": 404}


@pytest.mark.usefixtures("allow_loopback")
def test_redirects(node, http_server):
    output = run(node, {"url": http_server.url("/redirect?to=/json")})
    assert output["status"] == 200 and output["url"].endswith("/json")
    output = run(
        node, {"url": http_server.url("/redirect?to=/json"), "follow_redirects": False, "fail_on_status": False}
    )
    assert output["status"] == 302 and output["headers"]["location"] == "/json"
    loop = http_server.url("/redirect?to=") + http_server.url("/redirect?to=/json")
    with pytest.raises(NodeError, match="Too many redirects"):
        run(node, {"url": loop, "max_redirects": 1})


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/", "http://[::1]:9/"])
def test_redirect_to_a_blocked_address_fails_the_node(node, http_server, target):
    with pytest.raises(NodeError, match="Destination blocked") as excinfo:
        run(node, {"url": http_server.url(f"/redirect?to={target}")})
    assert excinfo.value.retryable is False and excinfo.value.data["blocked"] is True


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/echo",
        "http://localhost:{port}/echo",
        "http://2130706433:{port}/echo",
        "http://0x7f.1:{port}/echo",
        "http://0177.0.0.1:{port}/echo",
        "http://017700000001:{port}/echo",
        "http://[::ffff:127.0.0.1]:{port}/echo",
        "http://[::1]:{port}/echo",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_ssrf_guard_is_on_by_default(settings, node, http_server, url):
    settings.SSRF_ALLOWLIST = []
    with pytest.raises(NodeError, match="Destination blocked"):
        run(node, {"url": url.format(port=http_server.port)})
    assert http_server.requests == []


@pytest.mark.usefixtures("allow_loopback")
def test_response_size_cap(node, http_server):
    ok = run(node, {"url": http_server.url("/big?bytes=5000"), "max_response_bytes": 5000})
    assert len(ok["text"]) == 5000
    with pytest.raises(NodeError, match="over the 1000-byte limit"):
        run(node, {"url": http_server.url("/big?bytes=5000"), "max_response_bytes": 1000})
    # no Content-Length: reading stops once the cap is passed, not at the end of 50 MB
    with pytest.raises(NodeError, match="larger than the 100000-byte limit"):
        run(node, {"url": http_server.url("/big?bytes=50000000&length=0"), "max_response_bytes": 100000})


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.timeout(30)
def test_timeout(node, http_server):
    with pytest.raises(NodeError, match=r"timed out after 0\.3 s") as excinfo:
        run(node, {"url": http_server.url("/hang"), "timeout": 0.3})
    assert excinfo.value.retryable is True


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.timeout(30)
def test_cancel_aborts_the_request_in_flight(node, http_server):
    """The server holds the response for 30 s; cancelling must end the node long before the test timeout."""
    ctx = make_ctx({"url": http_server.url("/hang")})

    def cancel_when_waiting():
        http_server.hanging.wait(10)
        ctx.cancel_event.set()

    threading.Thread(target=cancel_when_waiting, daemon=True).start()
    with pytest.raises(NodeCancelled, match="cancelled"):
        node.execute(ctx)
    assert not http_server.release.is_set()  # the server never answered: the node gave up by itself


@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.timeout(30)
def test_deadline_ends_the_attempt(node, http_server):
    ctx = make_ctx({"url": http_server.url("/hang"), "timeout": 60}, deadline=time.monotonic() + 0.5)
    with pytest.raises(NodeCancelled, match="timeout"):
        node.execute(ctx)


@pytest.mark.usefixtures("allow_loopback")
def test_cancelled_before_start(node, http_server):
    ctx = make_ctx({"url": http_server.url("/echo")})
    ctx.cancel_event.set()
    with pytest.raises(NodeCancelled):
        node.execute(ctx)
    assert http_server.requests == []


# -- credentials ------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize(
    ("kind", "extra", "header", "expected"),
    [
        (CredentialKind.HTTP_BEARER, {}, "Authorization", f"Bearer {SECRET}"),
        (CredentialKind.HTTP_HEADER, {"header_name": "X-Api-Key"}, "X-Api-Key", SECRET),
    ],
)
def test_auth_from_a_credential_never_leaks(node, http_server, workspace, user, caplog, kind, extra, header, expected):
    caplog.set_level(logging.DEBUG)
    credential = credential_create(workspace=workspace, user=user, name="svc", kind=kind, secret=SECRET, extra=extra)
    events = []
    for ref in ("svc", credential.pk):
        ctx = make_ctx(
            {"url": http_server.url("/whoami"), "credential": ref, "headers": {"Cookie": "a=b"}},
            workspace=workspace,
            emit_callback=lambda kind, data: events.append((kind, data)),
        )
        output = node.execute(ctx)
        assert http_server.last().headers[header] == expected
        dumped = json.dumps([output, ctx.logs, events])
        assert SECRET not in dumped
        assert "a=b" not in json.dumps([ctx.logs, events])  # cookies are redacted from logs too
    assert SECRET not in caplog.text
    if kind == CredentialKind.HTTP_BEARER:  # the server echoed the header back: the output scrubs it
        assert "[redacted]" in output["json"]["authorization"]
    assert ctx.logs[0]["request_headers"][header.lower()] == "[redacted]"
    from accounts.models import AuditLog

    assert AuditLog.objects.filter(action="credential.used", target_id=str(credential.pk)).count() == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("allow_loopback")
@pytest.mark.parametrize(
    ("kind", "extra", "header"),
    [
        (CredentialKind.HTTP_HEADER, {"header_name": "X-Api-Key"}, "X-Api-Key"),
        (CredentialKind.HTTP_BEARER, {}, "Authorization"),
    ],
)
def test_credentials_are_not_sent_to_another_origin_on_redirect(
    node, http_server, workspace, user, kind, extra, header
):
    credential_create(workspace=workspace, user=user, name="svc", kind=kind, secret=SECRET, extra=extra)
    same = http_server.url("/redirect?to=/echo")
    run(node, {"url": same, "credential": "svc"}, workspace=workspace)
    assert [header in r.headers for r in http_server.requests] == [True, True]
    other = http_server.url("/echo", host="localhost")  # another origin (same loopback server)
    run(node, {"url": http_server.url(f"/redirect?to={other}"), "credential": "svc"}, workspace=workspace)
    assert [header in r.headers for r in http_server.requests[2:]] == [True, False]


@pytest.mark.django_db
@pytest.mark.usefixtures("allow_loopback")
def test_basic_auth_credential(node, http_server, workspace, user):
    credential_create(
        workspace=workspace,
        user=user,
        name="basic",
        kind=CredentialKind.HTTP_BASIC,
        secret="pw-1",
        extra={"username": "u"},
    )
    run(node, {"url": http_server.url("/echo"), "credential": "basic"}, workspace=workspace)
    assert http_server.last().headers["Authorization"] == "Basic dTpwdy0x"


@pytest.mark.django_db
@pytest.mark.usefixtures("allow_loopback")
def test_set_cookie_is_redacted_from_output(node, http_server):
    output = run(node, {"url": http_server.url("/cookie")})
    assert output["headers"]["set-cookie"] == "[redacted]"
    assert "topsecretcookie" not in json.dumps(output)


@pytest.mark.django_db
def test_bad_credential_references(node, http_server, workspace, user):
    credential_create(workspace=workspace, user=user, name="db", kind=CredentialKind.DATABASE, secret="sqlite:///x.db")
    with pytest.raises(NodeError, match="does not exist"):
        run(node, {"url": http_server.url("/echo"), "credential": "missing"}, workspace=workspace)
    with pytest.raises(NodeError, match="this node needs"):
        run(node, {"url": http_server.url("/echo"), "credential": "db"}, workspace=workspace)


def test_config_validation(node):
    assert node.validate_config({"url": "ftp://x"})[0].path == "config.url"
    assert node.validate_config({"url": "http://x", "method": "GET", "body_type": "json", "body": {}})
    assert node.validate_config({"url": "http://x", "method": "TRACE"})
    assert node.validate_config({"url": "http://x/{{ broken"})[0].message.startswith("Template error")
    assert node.validate_config({"url": "http://x", "method": "POST", "body_type": "raw", "body": {"a": 1}})
    assert node.validate_config({"url": "http://x", "nope": 1})
    assert node.validate_config({"url": "https://{{ inputs.host }}/x", "method": "POST", "body_type": "json"}) == []


@pytest.mark.usefixtures("allow_loopback")
def test_url_with_userinfo_is_redacted_from_logs_and_output(node, http_server):
    ctx = make_ctx({"url": f"http://joe:pa55word@127.0.0.1:{http_server.port}/echo"})
    output = node.execute(ctx)
    assert "pa55word" not in json.dumps([output, ctx.logs])
