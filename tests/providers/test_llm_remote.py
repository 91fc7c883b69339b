"""Remote providers through their real SDKs against loopback servers speaking each wire protocol."""

from __future__ import annotations

import logging

import pytest

from providers.llm import ResolvedProvider, call_with_retry, chat_model_for, classify_error

from .fakes import FakeProvider

SECRET = "sk-test-SECRET-9f8e7d6c5b4a"

# provider name -> wire protocol of the fake
PROVIDERS = {
    "openai": "openai",
    "deepseek": "openai",
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
}


def key_header(protocol: str, request) -> str:
    headers = request.headers
    if protocol == "anthropic":
        # Older SDKs send x-api-key, newer ones a bearer token: either carries the key.
        return headers.get("x-api-key", "") + headers.get("authorization", "")
    if protocol == "gemini":
        return headers.get("x-goog-api-key", "") or request.path
    return headers.get("authorization", "")


def model_for(provider: str, fake: FakeProvider, **kwargs):
    resolved = ResolvedProvider(provider, "test-model", fake.base_url, SECRET)
    return chat_model_for(resolved, max_tokens=32, timeout=10, **kwargs)


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request):
    return request.param


@pytest.fixture
def fake(provider):
    with FakeProvider(PROVIDERS[provider], default_text="The answer is forty two.") as server:
        yield server


def test_streaming_sends_the_key_and_yields_tokens(provider, fake, caplog):
    caplog.set_level(logging.DEBUG)
    model = model_for(provider, fake)
    chunks = list(model.stream("What is the answer?"))
    text = "".join(c.content for c in chunks if isinstance(c.content, str))
    assert text == "The answer is forty two."
    assert sum(1 for c in chunks if c.content) >= 3  # it really streamed, piece by piece
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.usage_metadata and merged.usage_metadata["output_tokens"] >= 1
    request = fake.chat_requests()[0]
    assert SECRET in key_header(PROVIDERS[provider], request)
    assert "What is the answer?" in str(request.body)
    assert SECRET not in caplog.text


def test_non_streaming_invoke(provider, fake):
    reply = model_for(provider, fake).invoke("Hi")
    assert reply.content == "The answer is forty two."


@pytest.mark.parametrize("status", [401, 500])
def test_errors_are_classified_without_the_key(provider, fake, status, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail(status)
    with pytest.raises(Exception) as raised:
        list(model_for(provider, fake).stream("Hi"))
    error = classify_error(raised.value, secret=SECRET)
    assert error.status == status
    assert error.retryable is (status == 500)
    assert SECRET not in error.message
    assert SECRET not in caplog.text
    assert len(fake.chat_requests()) == 1  # SDK retries are off: one rule for every provider


def test_429_is_retried_then_succeeds(provider, fake):
    fake.fail(429, retry_after="0")
    fake.fail(429, retry_after="0")
    model = model_for(provider, fake)
    seen = []
    reply = call_with_retry(
        lambda: model.invoke("Hi"), attempts=3, base_delay=0.01, on_retry=lambda e, d: seen.append(e.status)
    )
    assert reply.content == "The answer is forty two."
    assert seen == [429, 429]
    assert len(fake.chat_requests()) == 3


def test_429_gives_up_after_the_last_attempt(provider, fake):
    for _ in range(3):
        fake.fail(429, retry_after="0")
    model = model_for(provider, fake)
    with pytest.raises(Exception) as raised:
        call_with_retry(lambda: model.invoke("Hi"), attempts=2, base_delay=0.01)
    assert classify_error(raised.value).status == 429
    assert len(fake.chat_requests()) == 2


def test_401_is_not_retried(provider, fake):
    fake.fail(401)
    model = model_for(provider, fake)
    with pytest.raises(Exception):  # each SDK raises its own type
        call_with_retry(lambda: model.invoke("Hi"), attempts=3, base_delay=0.01)
    assert len(fake.chat_requests()) == 1


def test_stop_and_max_tokens_reach_the_provider(provider, fake):
    model = model_for(provider, fake, stop=["END"])
    model.invoke("Hi")
    body = str(fake.chat_requests()[0].body)
    assert "END" in body
    assert "32" in body  # max tokens under each protocol's own name


# -- "Test" on a saved credential: lists the provider's models -----------------------------------------------


@pytest.mark.django_db
def test_credential_test_lists_models(provider, fake, workspace, user):
    from providers.credentials import credential_create, credential_test

    credential = credential_create(
        workspace=workspace,
        user=user,
        name=f"{provider}-key",
        kind="llm",
        provider=provider,
        base_url=fake.base_url,
        secret=SECRET,
    )
    credential = credential_test(credential=credential, user=user)
    assert credential.last_test_ok is True, credential.last_test_message
    assert credential.last_test_message.startswith("OK: ")
    assert "model" in credential.last_test_message or "gemini" in credential.last_test_message
    request = fake.requests[-1]
    assert request.method == "GET"
    assert SECRET in " ".join(request.headers.values())


@pytest.mark.django_db
def test_credential_test_reports_a_rejected_key(provider, fake, workspace, user):
    from providers.credentials import credential_create, credential_test

    credential = credential_create(
        workspace=workspace, user=user, name="bad", kind="llm", provider=provider, base_url=fake.base_url, secret="bad"
    )
    credential = credential_test(credential=credential, user=user)
    assert credential.last_test_ok is False
    assert "401" in credential.last_test_message
