"""The chat-model factory: one place that turns (provider, credential, model) into a LangChain chat model.

``local`` needs nothing: it is the bundled SmolLM2. Every other provider is configured from a vault
credential (its ``base_url``, ``default_model`` and secret). SDK-level retries are switched off:
:func:`call_with_retry` applies one retry rule to every provider (429 and 5xx, honouring
``Retry-After``), so behaviour does not depend on which SDK happens to retry what.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from langchain_core.language_models.chat_models import BaseChatModel

from .choices import Provider
from .local_llm import LOCAL_MODEL_NAME, ChatLocalSmolLM

if TYPE_CHECKING:
    from .models import Credential

logger = logging.getLogger(__name__)

DEFAULT_BASE_URLS: dict[str, str] = {
    Provider.OPENAI: "https://api.openai.com/v1",
    Provider.DEEPSEEK: "https://api.deepseek.com/v1",
    Provider.ANTHROPIC: "https://api.anthropic.com",
    Provider.GEMINI: "https://generativelanguage.googleapis.com",
    Provider.OLLAMA: "http://127.0.0.1:11434",
    Provider.OPENAI_COMPATIBLE: "",
}

DEFAULT_MODELS: dict[str, str] = {
    Provider.LOCAL: LOCAL_MODEL_NAME,
    Provider.OPENAI: "gpt-4o-mini",
    Provider.DEEPSEEK: "deepseek-chat",
    Provider.ANTHROPIC: "claude-3-5-haiku-latest",
    Provider.GEMINI: "gemini-2.0-flash",
    Provider.OLLAMA: "llama3.2",
    Provider.OPENAI_COMPATIBLE: "",
}

OPENAI_PROTOCOL = {Provider.OPENAI, Provider.DEEPSEEK, Provider.OPENAI_COMPATIBLE}


class LLMConfigError(ValueError):
    """The provider settings cannot make a model (unknown provider, no key, no base URL)."""


@dataclass(frozen=True)
class ProviderError:
    """A provider failure reduced to what the node needs: a readable message and whether to retry."""

    status: int | None
    retryable: bool
    message: str
    retry_after: float | None = None


def credential_secret_of(credential: Credential) -> str:
    """The decrypted secret (the vault owns decryption)."""
    from .credentials import credential_secret

    return credential_secret(credential)


@dataclass(frozen=True)
class ResolvedProvider:
    provider: str
    model: str
    base_url: str
    secret: str


def resolve_provider(*, provider: str = "", credential: Credential | None = None, model: str = "") -> ResolvedProvider:
    """Combine a provider name, an optional credential and a model name into concrete settings."""
    if credential is not None:
        provider = credential.provider or provider or Provider.OPENAI_COMPATIBLE
    provider = provider or Provider.LOCAL
    if provider not in Provider.values:
        raise LLMConfigError(f"Unknown LLM provider {provider!r}; use one of {', '.join(Provider.values)}.")
    if provider == Provider.LOCAL:
        return ResolvedProvider(Provider.LOCAL, LOCAL_MODEL_NAME, "", "")
    if credential is None and provider != Provider.OLLAMA:
        raise LLMConfigError(f"The {Provider(provider).label} provider needs a credential (an API key in the vault).")
    base_url = (credential.base_url if credential is not None else "") or DEFAULT_BASE_URLS[provider]
    if not base_url:
        raise LLMConfigError("An OpenAI-compatible credential needs a base URL.")
    model = model or (credential.default_model if credential is not None else "") or DEFAULT_MODELS[provider]
    if not model:
        raise LLMConfigError("No model given and the credential has no default model.")
    secret = credential_secret_of(credential) if credential is not None else ""
    return ResolvedProvider(provider, model, base_url.rstrip("/"), secret)


def chat_model_create(
    *,
    provider: str = "",
    credential: Credential | None = None,
    model: str = "",
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    stop: list[str] | None = None,
    cancel_event: threading.Event | None = None,
    resolved: ResolvedProvider | None = None,
) -> BaseChatModel:
    """Return a LangChain chat model for ``provider`` (``local`` by default, no credential needed)."""
    settings = resolved or resolve_provider(provider=provider, credential=credential, model=model)
    return chat_model_for(
        settings, temperature=temperature, max_tokens=max_tokens, timeout=timeout, stop=stop, cancel_event=cancel_event
    )


def chat_model_for(
    settings: ResolvedProvider,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    stop: list[str] | None = None,
    cancel_event: threading.Event | None = None,
) -> BaseChatModel:
    provider, model, base_url, secret = settings.provider, settings.model, settings.base_url, settings.secret
    common: dict[str, Any] = {}
    if temperature is not None:
        common["temperature"] = temperature
    if provider == Provider.LOCAL:
        return ChatLocalSmolLM(
            temperature=temperature or 0.0, max_tokens=max_tokens or 256, stop=stop or None, cancel_event=cancel_event
        )
    if provider in OPENAI_PROTOCOL:
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=model,
            base_url=base_url,
            api_key=secret or "not-needed",
            max_tokens=max_tokens,
            timeout=timeout,
            max_retries=0,
            stop=stop or None,
            stream_usage=True,
            **common,
        )
    if provider == Provider.ANTHROPIC:
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(
            model=model,
            base_url=base_url,
            api_key=secret,
            max_tokens=max_tokens or 1024,
            timeout=timeout,
            max_retries=0,
            stop=stop or None,
            **common,
        )
    if provider == Provider.GEMINI:
        from langchain_google_genai import ChatGoogleGenerativeAI

        return ChatGoogleGenerativeAI(
            model=model,
            google_api_key=secret,
            base_url=base_url,
            max_output_tokens=max_tokens,
            timeout=timeout,
            max_retries=0,
            stop=stop or None,
            **common,
        )
    if provider == Provider.OLLAMA:
        from langchain_ollama import ChatOllama

        client_kwargs: dict[str, Any] = {"timeout": timeout}
        if secret:
            client_kwargs["headers"] = {"Authorization": f"Bearer {secret}"}
        return ChatOllama(
            model=model,
            base_url=base_url,
            num_predict=max_tokens,
            stop=stop or None,
            client_kwargs=client_kwargs,
            **common,
        )
    raise LLMConfigError(f"Unknown LLM provider {provider!r}.")


# -- errors and retries ------------------------------------------------------------------------------


def _status_of(exc: BaseException) -> tuple[int | None, Any]:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        for attr in ("status_code", "code", "status"):
            value = getattr(current, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value, getattr(current, "response", None)
        response = getattr(current, "response", None)
        value = getattr(response, "status_code", None)
        if isinstance(value, int):
            return value, response
        current = current.__cause__ or current.__context__
        seen += 1
    return None, None


def classify_error(exc: BaseException, *, secret: str = "") -> ProviderError:
    """Reduce any SDK exception to a status, a retry decision and a message free of the secret."""
    status, response = _status_of(exc)
    retry_after = None
    headers = getattr(response, "headers", None)
    if headers is not None:
        try:
            retry_after = float(headers.get("retry-after"))
        except (TypeError, ValueError):
            retry_after = None
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if secret:
        detail = detail.replace(secret, "***")
    if status == 401 or status == 403:
        message, retryable = f"The provider rejected the credential (HTTP {status}). Check the API key.", False
    elif status == 429:
        message, retryable = "The provider is rate limiting requests (HTTP 429).", True
    elif status is not None and status >= 500:
        message, retryable = f"The provider failed (HTTP {status}).", True
    elif status is not None:
        message, retryable = f"The provider refused the request (HTTP {status}): {detail}", False
    elif isinstance(exc, httpx.TimeoutException | TimeoutError) or "timed out" in detail.lower():
        message, retryable = "The provider did not answer in time.", True
    elif isinstance(exc, httpx.TransportError | ConnectionError) or "connect" in detail.lower():
        message, retryable = f"Could not reach the provider: {detail}", True
    else:
        message, retryable = f"{type(exc).__name__}: {detail}", False
    return ProviderError(status, retryable, message, retry_after)


T = TypeVar("T")


def call_with_retry(
    call: Callable[[], T],
    *,
    attempts: int = 3,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    secret: str = "",
    should_retry: Callable[[], bool] = lambda: True,
    on_retry: Callable[[ProviderError, float], None] | None = None,
    cancel_event: threading.Event | None = None,
) -> T:
    """Run ``call``; on 429 or 5xx (or a network error) wait and try again, up to ``attempts`` times.

    ``should_retry`` lets a streaming caller refuse a retry once tokens were already emitted.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            error = classify_error(exc, secret=secret)
            if not error.retryable or attempt >= attempts or not should_retry():
                raise
            delay = error.retry_after if error.retry_after is not None else base_delay * (2 ** (attempt - 1))
            delay = min(max(delay, 0.0), max_delay)
            if on_retry is not None:
                on_retry(error, delay)
            if cancel_event is not None:
                if cancel_event.wait(delay):
                    raise
            else:
                time.sleep(delay)
    raise AssertionError("unreachable")


# -- credential test -------------------------------------------------------------------------------


def credential_test_llm(credential: Credential) -> tuple[bool, str]:
    """Check an LLM credential by listing the provider's models. Never puts the secret in the message."""
    try:
        settings = resolve_provider(credential=credential, model=credential.default_model or "x")
    except LLMConfigError as exc:
        return False, str(exc)
    except Exception as exc:  # the vault could not decrypt
        return False, f"Could not read the secret: {type(exc).__name__}"
    if settings.provider == Provider.LOCAL:
        from .local_llm import load_local_model

        load_local_model()
        return True, f"Local model {LOCAL_MODEL_NAME} is loaded."
    base, secret = settings.base_url, settings.secret
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if settings.provider in OPENAI_PROTOCOL:
        url = f"{base}/models"
        headers["Authorization"] = f"Bearer {secret}"
    elif settings.provider == Provider.ANTHROPIC:
        url = f"{base}/v1/models"
        headers.update({"x-api-key": secret, "anthropic-version": "2023-06-01"})
    elif settings.provider == Provider.GEMINI:
        url = f"{base}/v1beta/models"
        headers["x-goog-api-key"] = secret
    else:  # ollama
        url = f"{base}/api/tags"
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
    try:
        response = httpx.get(url, headers=headers, params=params, timeout=15.0)
    except httpx.HTTPError as exc:
        return False, classify_error(exc, secret=secret).message
    if response.status_code >= 400:
        return False, classify_error(httpx.HTTPStatusError("", request=response.request, response=response)).message
    try:
        body = response.json()
    except ValueError:
        return False, "The provider answered with something other than JSON."
    items = body.get("data") or body.get("models") or []
    names = [str(item.get("id") or item.get("name") or "") for item in items if isinstance(item, dict)]
    names = [name.removeprefix("models/") for name in names if name]
    shown = ", ".join(names[:5]) + ("…" if len(names) > 5 else "")
    return True, f"OK: {len(names)} models" + (f" ({shown})" if shown else "")
