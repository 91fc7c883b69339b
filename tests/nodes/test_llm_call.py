"""The llm_call node with the real local model, and with remote providers on loopback servers."""

from __future__ import annotations

import logging
import threading

import pytest

from providers.choices import CredentialKind
from providers.credentials import credential_create
from providers.models import TokenUsage
from tests.providers.fakes import FakeProvider
from workflows.nodes import NodeCancelled, NodeError, get_node_type
from workflows.nodes.llm_call import parse_json_reply

SECRET = "sk-node-SECRET-1234567890"


@pytest.fixture
def node():
    return get_node_type("llm_call")


@pytest.fixture
def openai_fake():
    with FakeProvider("openai", default_text='{"city": "Paris", "country": "France"}') as server:
        yield server


@pytest.fixture
def openai_credential(workspace, user, openai_fake):
    return credential_create(
        workspace=workspace,
        user=user,
        name="openai-test",
        kind=CredentialKind.LLM,
        provider="openai",
        base_url=openai_fake.base_url,
        default_model="gpt-4o-mini",
        secret=SECRET,
    )


# -- the real local model ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_local_model_answers_and_streams_tokens(node, make_ctx, recorder, local_llm):
    ctx = make_ctx(
        "llm_call",
        {"prompt": "What is the capital of {{ inputs.country }}?", "max_tokens": 24},
        context={"inputs": {"country": "France"}, "nodes": {}, "vars": {}},
    )
    output = node.execute(ctx)
    assert "Paris" in output["text"]
    assert output["provider"] == "local" and output["model"] == "SmolLM2-135M-Instruct"
    tokens = recorder.of_type("llm.token")
    assert len(tokens) >= 2
    assert "".join(t["text"] for t in tokens) == output["text"]
    assert all(t["node_id"] == "llm_call" for t in tokens)
    assert output["input_tokens"] > 10 and 0 < output["output_tokens"] <= 24
    assert output["first_token_ms"] is not None and output["latency_ms"] >= output["first_token_ms"]
    usage = TokenUsage.objects.get()
    assert (usage.provider, usage.input_tokens, usage.output_tokens) == (
        "local",
        output["input_tokens"],
        output["output_tokens"],
    )
    assert usage.cost_usd == 0 and usage.node_id == "llm_call"


@pytest.mark.django_db
def test_local_model_honours_max_tokens(node, make_ctx, local_llm):
    output = node.execute(make_ctx("llm_call", {"prompt": "Write a long story about a dragon.", "max_tokens": 5}))
    assert output["output_tokens"] == 5
    assert output["finish_reason"] == "length"


@pytest.mark.django_db
def test_local_model_honours_stop_sequences(node, make_ctx, recorder, local_llm):
    config = {"prompt": "What is the capital of France?", "max_tokens": 24, "stop": ["Paris"]}
    output = node.execute(make_ctx("llm_call", config))
    assert output["text"].startswith("The capital of France")
    assert "Paris" not in output["text"]
    assert "Paris" not in "".join(t["text"] for t in recorder.of_type("llm.token"))
    assert output["finish_reason"] == "stop"


@pytest.mark.django_db
def test_cancel_stops_generation_within_a_token(node, make_ctx, recorder, local_llm):
    cancel = threading.Event()

    def on_event(kind, data):
        if kind == "llm.token":
            cancel.set()

    recorder.on_event = on_event
    ctx = make_ctx("llm_call", {"prompt": "Write a long story about a dragon.", "max_tokens": 200}, cancel_event=cancel)
    with pytest.raises(NodeCancelled):
        node.execute(ctx)
    usage = TokenUsage.objects.get()
    streamed = "".join(t["text"] for t in recorder.of_type("llm.token"))
    # Only the tokens already generated when cancel was seen, plus at most the one in progress.
    assert usage.output_tokens <= len(local_llm.tokenizer.encode(streamed)) + 2
    assert usage.output_tokens < 20


@pytest.mark.django_db
def test_local_json_mode_parses_the_reply(node, make_ctx, local_llm):
    config = {
        "prompt": 'Output this JSON exactly: {"answer": 42}',
        "json_output": True,
        "json_schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}},
        "max_tokens": 24,
    }
    output = node.execute(make_ctx("llm_call", config))
    assert output["json"] == {"answer": 42}
    assert output["json_attempts"] == 1


def test_parse_json_reply_machinery():
    assert parse_json_reply('```json\n{"a": 1}\n```', None) == {"a": 1}
    assert parse_json_reply('Sure! {"a": [1, 2]} Hope it helps.', None) == {"a": [1, 2]}
    assert parse_json_reply("[1, 2]", {"type": "array"}) == [1, 2]
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_json_reply("no json here", None)
    with pytest.raises(ValueError, match="does not match the schema at answer"):
        parse_json_reply('{"answer": "x"}', {"properties": {"answer": {"type": "integer"}}})


# -- remote providers through a vault credential ----------------------------------------------------------


@pytest.mark.django_db
def test_openai_credential_streams_and_is_recorded(node, make_ctx, recorder, openai_fake, openai_credential, caplog):
    caplog.set_level(logging.DEBUG)
    openai_fake.reply("Paris is the capital of France.")
    output = node.execute(make_ctx("llm_call", {"credential": "openai-test", "prompt": "Capital of France?"}))
    assert output["text"] == "Paris is the capital of France."
    assert output["provider"] == "openai" and output["model"] == "gpt-4o-mini"
    assert "".join(t["text"] for t in recorder.of_type("llm.token")) == output["text"]
    request = openai_fake.chat_requests()[0]
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.body["model"] == "gpt-4o-mini" and request.body["stream"] is True
    usage = TokenUsage.objects.get()
    assert usage.provider == "openai" and usage.input_tokens == 11 and usage.cost_usd > 0
    assert SECRET not in caplog.text


@pytest.mark.django_db
def test_json_mode_retries_invalid_json_then_succeeds(node, make_ctx, openai_fake, openai_credential):
    openai_fake.reply("Sure, here it is: city = Paris")
    openai_fake.reply('{"city": 7}')  # valid JSON, wrong type for the schema
    openai_fake.reply('{"city": "Paris"}')
    config = {
        "credential": openai_credential.pk,
        "prompt": "Capital of France as JSON",
        "json_output": True,
        "json_retries": 2,
        "json_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    output = node.execute(make_ctx("llm_call", config))
    assert output["json"] == {"city": "Paris"} and output["json_attempts"] == 3
    requests = openai_fake.chat_requests()
    assert len(requests) == 3
    assert requests[0].body["response_format"] == {"type": "json_object"}
    # The retry shows the model its mistake.
    assert "does not match the schema" in requests[2].body["messages"][-1]["content"]
    assert TokenUsage.objects.count() == 3


@pytest.mark.django_db
def test_json_mode_gives_up_with_a_clear_error(node, make_ctx, openai_fake, openai_credential):
    for _ in range(2):
        openai_fake.reply("not json")
    config = {"credential": "openai-test", "prompt": "x", "json_output": True, "json_retries": 1}
    with pytest.raises(NodeError, match="did not return valid JSON after 2 attempt") as raised:
        node.execute(make_ctx("llm_call", config))
    assert raised.value.retryable is False


@pytest.mark.django_db
def test_401_fails_without_retry_and_without_the_key(node, make_ctx, openai_fake, openai_credential):
    openai_fake.fail(401)
    with pytest.raises(NodeError) as raised:
        node.execute(make_ctx("llm_call", {"credential": "openai-test", "prompt": "x"}))
    assert "401" in raised.value.message and SECRET not in raised.value.message
    assert raised.value.retryable is False
    assert len(openai_fake.chat_requests()) == 1


@pytest.mark.django_db
def test_429_is_retried_inside_the_node(node, make_ctx, recorder, openai_fake, openai_credential):
    openai_fake.fail(429, retry_after="0")
    openai_fake.reply("after the wait")
    output = node.execute(make_ctx("llm_call", {"credential": "openai-test", "prompt": "x"}))
    assert output["text"] == "after the wait"
    assert len(openai_fake.chat_requests()) == 2
    assert any("429" in log["message"] for log in recorder.of_type("node.log"))


@pytest.mark.django_db
def test_500_every_time_is_a_retryable_failure(node, make_ctx, openai_fake, openai_credential):
    for _ in range(3):
        openai_fake.fail(500, retry_after="0")
    with pytest.raises(NodeError) as raised:
        node.execute(make_ctx("llm_call", {"credential": "openai-test", "prompt": "x"}))
    assert "500" in raised.value.message and raised.value.retryable is True
    assert len(openai_fake.chat_requests()) == 3


@pytest.mark.django_db
def test_timeout_stops_a_slow_stream(node, make_ctx, openai_fake, openai_credential):
    openai_fake.reply("one two three four five six seven eight nine ten", delay=0.3)
    with pytest.raises(NodeError, match=r"timeout|in time"):
        node.execute(make_ctx("llm_call", {"credential": "openai-test", "prompt": "x", "timeout": 0.5}))


@pytest.mark.django_db
def test_bad_config_and_missing_credential(node, make_ctx, workspace):
    errors = node.validate_config({"provider": "openai", "prompt": "{{ broken"})
    paths = {e.path for e in errors}
    assert {"config.credential", "config.prompt"} <= paths
    assert node.validate_config({"max_tokens": 5})[0].path == "config.prompt"
    with pytest.raises(NodeError, match="does not exist"):
        node.execute(make_ctx("llm_call", {"credential": "nope", "prompt": "x"}))


@pytest.mark.django_db
def test_message_list_is_rendered_and_sent_in_order(node, make_ctx, openai_fake, openai_credential):
    config = {
        "credential": "openai-test",
        "model": "gpt-4o",
        "system": "You are {{ vars.persona }}.",
        "messages": [
            {"role": "user", "content": "Hi, I am {{ inputs.name }}."},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is my name?"},
        ],
        "temperature": 0.2,
        "max_tokens": 20,
        "stop": ["\n\n"],
    }
    context = {"inputs": {"name": "Ada"}, "vars": {"persona": "terse"}, "nodes": {}}
    output = node.execute(make_ctx("llm_call", config, context=context))
    assert output["model"] == "gpt-4o"
    body = openai_fake.chat_requests()[0].body
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("system", "You are terse."),
        ("user", "Hi, I am Ada."),
        ("assistant", "Hello!"),
        ("user", "What is my name?"),
    ]
    assert body["temperature"] == 0.2 and body["stop"] == ["\n\n"]
    assert body.get("max_tokens", body.get("max_completion_tokens")) == 20
