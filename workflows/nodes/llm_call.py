"""``llm_call``: one chat completion, streamed token by token as ``llm.token`` events.

The node renders its prompt (or message list), checks the token budgets, calls the model through the
provider factory with one retry rule for every provider, records the call in the ledger and returns
the text with token counts and latency. JSON mode parses (and optionally validates) the reply and
asks again, showing the model its mistake, up to ``json_retries`` times.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage

from providers.choices import Provider

from . import register
from .base import ConfigError, NodeCancelled, NodeContext, NodeError, NodeType

TOKEN_FLUSH_SECONDS = 0.05  # tokens arriving closer together than this share one event
JSON_INSTRUCTION = "Reply with a single valid JSON value and nothing else: no prose, no code fences."

MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
    "required": ["role", "content"],
    "additionalProperties": False,
}

PROVIDER_PROPERTIES: dict[str, Any] = {
    "provider": {"enum": list(Provider.values), "default": "local", "description": "local needs no credential."},
    "credential": {
        "type": ["string", "integer"],
        "description": "Vault credential (name or id); sets the provider, base URL and default model.",
    },
    "model": {"type": "string", "description": "Model name; empty uses the credential's default."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768, "default": 256},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds for the whole call."},
}


# -- shared by llm_call and agent ------------------------------------------------------------------------


class CancelWatch:
    """Looks like a threading.Event to the local model: set when the run is cancelled or time is up."""

    def __init__(self, ctx: NodeContext, timeout: float | None):
        self.ctx = ctx
        limits = [t for t in (timeout, ctx.time_left()) if t is not None]
        self.deadline = time.monotonic() + min(limits) if limits else None

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def is_set(self) -> bool:
        return self.ctx.cancel_event.is_set() or self.timed_out

    def wait(self, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.is_set():
                return True
            self.ctx.cancel_event.wait(min(0.05, max(0.0, end - time.monotonic())))
        return self.is_set()

    def check(self) -> None:
        if self.ctx.cancel_event.is_set():
            raise NodeCancelled("cancelled")
        if self.timed_out:
            raise NodeError("The model did not finish before the timeout.", retryable=True)


def resolve_llm(ctx: NodeContext, config: dict[str, Any]):
    """Load the credential named in ``config`` (if any) and settle provider, model and base URL."""
    from providers.llm import LLMConfigError, resolve_provider

    credential = None
    ref = config.get("credential")
    if ref not in (None, ""):
        try:
            from providers.credentials import credential_resolve
        except ImportError as exc:
            raise NodeError("Credentials are not available in this installation.", retryable=False) from exc
        try:
            credential = credential_resolve(workspace_id=ctx.workspace_id, ref=ref)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc) or f"Credential {ref!r} not found."
            raise NodeError(f"Credential {ref!r}: {message}", retryable=False) from exc
        if credential is None:
            raise NodeError(f"Credential {ref!r} not found in this workspace.", retryable=False)
        try:
            from providers.credentials import credential_mark_used

            credential_mark_used(credential=credential, run_id=ctx.run_id, node_id=ctx.node_id)
        except ImportError:
            pass
    try:
        return resolve_provider(
            provider=config.get("provider") or "", credential=credential, model=config.get("model") or ""
        )
    except LLMConfigError as exc:
        raise NodeError(str(exc), retryable=False) from exc


def message_text(messages: list[BaseMessage]) -> str:
    return "\n".join(m.content if isinstance(m.content, str) else json.dumps(m.content) for m in messages)


@dataclass
class ChatOutcome:
    message: AIMessage
    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    first_token_ms: float | None
    finish_reason: str = ""
    retries: list[str] = field(default_factory=list)


def chat_once(
    ctx: NodeContext,
    *,
    model: BaseChatModel,
    resolved: Any,
    messages: list[BaseMessage],
    max_tokens: int | None,
    watch: CancelWatch,
    stream_tokens: bool = True,
    attempts: int = 3,
) -> ChatOutcome:
    """One model call: budget check, retries on 429/5xx, token events, ledger row."""
    from providers.ledger import budget_check, estimate_tokens, usage_record
    from providers.llm import call_with_retry, classify_error

    planned = estimate_tokens(message_text(messages)) + (max_tokens or 0)
    budget_check(run_id=ctx.run_id, user_id=ctx.user_id, planned_tokens=planned)
    watch.check()

    state: dict[str, Any] = {"emitted": False}
    started = time.perf_counter()

    def consume() -> tuple[AIMessageChunk | None, float | None]:
        merged: AIMessageChunk | None = None
        first_token_ms: float | None = None
        pending: list[str] = []
        last_flush = time.perf_counter()
        iterator = model.stream(messages)
        try:
            for chunk in iterator:
                merged = chunk if merged is None else merged + chunk
                text = chunk.content if isinstance(chunk.content, str) else ""
                if text:
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - started) * 1000
                    pending.append(text)
                    now = time.perf_counter()
                    if stream_tokens and now - last_flush >= TOKEN_FLUSH_SECONDS:
                        ctx.emit("llm.token", {"text": "".join(pending)})
                        state["emitted"] = True
                        pending.clear()
                        last_flush = now
                if watch.is_set():
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            if pending and stream_tokens:
                ctx.emit("llm.token", {"text": "".join(pending)})
                state["emitted"] = True
        return merged, first_token_ms

    retries: list[str] = []

    def on_retry(error: Any, delay: float) -> None:
        retries.append(error.message)
        ctx.log(f"{error.message} Retrying in {delay:.1f}s.", level="warning")

    try:
        merged, first_token_ms = call_with_retry(
            consume,
            attempts=attempts,
            secret=resolved.secret,
            should_retry=lambda: not state["emitted"],
            on_retry=on_retry,
            cancel_event=watch,
        )
    except (NodeError, NodeCancelled):
        raise
    except Exception as exc:
        watch.check()
        error = classify_error(exc, secret=resolved.secret)
        raise NodeError(error.message, retryable=error.retryable, data={"status": error.status}) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    text = merged.content if merged is not None and isinstance(merged.content, str) else ""
    usage = (merged.usage_metadata if merged is not None else None) or {}
    input_tokens = int(usage.get("input_tokens") or estimate_tokens(message_text(messages)))
    output_tokens = int(usage.get("output_tokens") or estimate_tokens(text))
    if ctx.workspace_id is not None:
        usage_record(
            workspace_id=ctx.workspace_id,
            user_id=ctx.user_id,
            run_id=ctx.run_id,
            node_id=ctx.node_id,
            provider=resolved.provider,
            model=resolved.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    watch.check()
    metadata = (merged.response_metadata if merged is not None else None) or {}
    finish = str(metadata.get("finish_reason") or metadata.get("stop_reason") or metadata.get("done_reason") or "")
    message = AIMessage(
        content=text,
        tool_calls=list(merged.tool_calls) if merged is not None else [],
        usage_metadata=merged.usage_metadata if merged is not None else None,
    )
    return ChatOutcome(message, text, input_tokens, output_tokens, latency_ms, first_token_ms, finish, retries)


# -- JSON mode ---------------------------------------------------------------------------------------------

_CITATION = re.compile(r"\[(\d{1,3})\]")
_FENCE = re.compile(r"^```(?:json)?\s*(?P<body>.*?)\s*```$", re.DOTALL)


def parse_json_reply(text: str, schema: dict[str, Any] | None) -> Any:
    """Parse a reply as JSON (tolerating a code fence or prose around one object); raise ValueError."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group("body")
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as first_error:
        starts = [i for i in (candidate.find("{"), candidate.find("[")) if i != -1]
        end = max(candidate.rfind("}"), candidate.rfind("]"))
        if not starts or end <= min(starts):
            raise ValueError(f"not valid JSON ({first_error.msg} at position {first_error.pos})") from first_error
        try:
            value = json.loads(candidate[min(starts) : end + 1])
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at position {exc.pos})") from exc
    if schema:
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "the top level"
            raise ValueError(f"does not match the schema at {where}: {error.message}")
    return value


# -- the node ---------------------------------------------------------------------------------------------


@register
class LLMCallNode(NodeType):
    name = "llm_call"
    label = "LLM call"
    description = "Ask a language model (local by default). Tokens stream live; JSON mode parses the reply."
    category = "ai"
    icon = "✦"
    config_schema = {
        "type": "object",
        "properties": {
            **PROVIDER_PROPERTIES,
            "system": {"type": "string", "description": "System prompt (template)."},
            "prompt": {"type": "string", "description": "User prompt (template)."},
            "messages": {"type": "array", "items": MESSAGE_SCHEMA, "description": "Or a whole conversation."},
            "stop": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 8},
            "json_output": {"type": "boolean", "default": False},
            "json_schema": {"type": "object", "description": "Validate the parsed JSON against this schema."},
            "json_retries": {"type": "integer", "minimum": 0, "maximum": 5, "default": 2},
            "stream": {"type": "boolean", "default": True, "description": "Emit llm.token events."},
            "sources": {
                "type": ["string", "array"],
                "description": "Passages the answer may cite as [1], [2]… (e.g. {{ nodes.search.output.results }}).",
            },
            "sources_artifact": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.-]{1,100}$",
                "description": "Save the sources, marked cited or not, as this artifact (e.g. sources.json).",
            },
        },
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        from workflows import templating

        errors: list[ConfigError] = []
        if not config.get("prompt") and not config.get("messages"):
            errors.append(ConfigError("config.prompt", "Give a prompt or a message list."))
        for key in ("system", "prompt"):
            if isinstance(config.get(key), str) and (problem := templating.check_syntax(config[key])):
                errors.append(ConfigError(f"config.{key}", problem))
        for index, message in enumerate(config.get("messages") or []):
            if problem := templating.check_syntax(message.get("content", "")):
                errors.append(ConfigError(f"config.messages.{index}.content", problem))
        provider = config.get("provider") or "local"
        if provider not in ("local", "ollama") and config.get("credential") in (None, ""):
            errors.append(ConfigError("config.credential", f"The {provider} provider needs a credential."))
        if config.get("json_schema"):
            try:
                jsonschema.Draft202012Validator.check_schema(config["json_schema"])
            except jsonschema.SchemaError as exc:
                errors.append(ConfigError("config.json_schema", f"Not a valid JSON schema: {exc.message}"))
        return errors

    def build_messages(self, ctx: NodeContext, config: dict[str, Any]) -> list[BaseMessage]:
        messages: list[BaseMessage] = []
        system = ctx.render_text(config["system"]) if config.get("system") else ""
        if config.get("json_output"):
            system = f"{system}\n\n{JSON_INSTRUCTION}".strip()
        if system:
            messages.append(SystemMessage(content=system))
        for item in config.get("messages") or []:
            content = ctx.render_text(item["content"])
            role = item["role"]
            if role == "system":
                messages.append(SystemMessage(content=content))
            elif role == "assistant":
                messages.append(AIMessage(content=content))
            else:
                messages.append(HumanMessage(content=content))
        if config.get("prompt"):
            messages.append(HumanMessage(content=ctx.render_text(config["prompt"])))
        if not any(isinstance(m, HumanMessage) for m in messages):
            raise NodeError("The rendered prompt is empty.", retryable=False)
        return messages

    def with_citations(self, ctx: NodeContext, config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Mark which of ``sources`` the answer cites ([n]) and save them as an artifact when asked."""
        if config.get("sources") in (None, "", []):
            return result
        sources = ctx.render(config["sources"])
        if not isinstance(sources, list):
            raise NodeError("config.sources must render to a list of passages.", retryable=False)
        cited_numbers = {int(n) for n in _CITATION.findall(result["text"])}
        citations = []
        for number, source in enumerate(sources, start=1):
            source = source if isinstance(source, dict) else {"text": str(source)}
            citations.append(
                {
                    "n": number,
                    "cited": number in cited_numbers,
                    "title": source.get("title", ""),
                    "source": source.get("source", ""),
                    "document_id": source.get("document_id"),
                    "score": source.get("score"),
                    "text": str(source.get("text", ""))[:2000],
                }
            )
        result["citations"] = citations
        if config.get("sources_artifact"):
            result["sources_artifact"] = ctx.save_artifact(
                config["sources_artifact"],
                {"answer": result["text"], "sources": citations},
                content_type="application/json",
            )
        return result

    def execute(self, ctx: NodeContext) -> dict[str, Any]:
        from providers.llm import chat_model_for

        config = ctx.config
        if errors := self.validate_config(config):
            raise NodeError("; ".join(map(str, errors)), retryable=False)
        resolved = resolve_llm(ctx, config)
        messages = self.build_messages(ctx, config)
        max_tokens = int(config.get("max_tokens") or 256)
        timeout = config.get("timeout")
        watch = CancelWatch(ctx, timeout)
        model = chat_model_for(
            resolved,
            temperature=float(config.get("temperature") or 0),
            max_tokens=max_tokens,
            timeout=timeout if timeout is not None else ctx.time_left(),
            stop=list(config.get("stop") or []) or None,
            cancel_event=watch,
        )
        if config.get("json_output") and resolved.provider in (Provider.OPENAI, Provider.DEEPSEEK):
            model = model.bind(response_format={"type": "json_object"})

        json_mode = bool(config.get("json_output"))
        tries = 1 + (int(config.get("json_retries", 2)) if json_mode else 0)
        totals = {"input_tokens": 0, "output_tokens": 0, "latency_ms": 0.0}
        first_token_ms: float | None = None
        json_errors: list[str] = []
        for attempt in range(1, tries + 1):
            outcome = chat_once(
                ctx,
                model=model,
                resolved=resolved,
                messages=messages,
                max_tokens=max_tokens,
                watch=watch,
                stream_tokens=config.get("stream", True),
            )
            totals["input_tokens"] += outcome.input_tokens
            totals["output_tokens"] += outcome.output_tokens
            totals["latency_ms"] += outcome.latency_ms
            if first_token_ms is None:
                first_token_ms = outcome.first_token_ms
            result: dict[str, Any] = {
                "text": outcome.text,
                "model": resolved.model,
                "provider": resolved.provider,
                **totals,
                "latency_ms": round(totals["latency_ms"], 1),
                "first_token_ms": round(first_token_ms, 1) if first_token_ms is not None else None,
                "finish_reason": outcome.finish_reason,
            }
            if not json_mode:
                return self.with_citations(ctx, config, result)
            try:
                result["json"] = parse_json_reply(outcome.text, config.get("json_schema"))
            except ValueError as exc:
                json_errors.append(str(exc))
                ctx.log(f"Reply {attempt} is {exc}.", level="warning")
                messages = [
                    *messages,
                    AIMessage(content=outcome.text),
                    HumanMessage(content=f"Your reply is {exc}. {JSON_INSTRUCTION}"),
                ]
                continue
            result["json_attempts"] = attempt
            return self.with_citations(ctx, config, result)
        raise NodeError(
            f"The model did not return valid JSON after {tries} attempt(s): {json_errors[-1]}",
            retryable=False,
            data={"errors": json_errors},
        )
