"""``agent``: a language model that calls tools through LangChain tool calling, for up to ``max_steps`` turns.

Tools are declared in the config:

- ``{"type": "workflow", "workflow": <id, slug or name>}`` runs another workflow of the workspace as a
  sub-run (``trigger="agent"``, synchronously) with the model's arguments as its inputs;
- ``{"type": "http", "name": ..., "method": ..., "url": "https://…/{{ args.city }}", ...}`` makes an
  HTTP request through the ``http_request`` node (same SSRF guard, credentials and limits);
- ``{"type": "vector_search", "collection": ...}`` searches a collection.

Every call and result is emitted as ``agent.tool_call`` / ``agent.tool_result``. With ``session`` set,
the conversation (user prompts and final answers) is kept in ConversationMemory across runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from . import register
from .base import ConfigError, NodeCancelled, NodeContext, NodeError, NodeType
from .llm_call import PROVIDER_PROPERTIES, CancelWatch, chat_once, resolve_llm

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
RESULT_MAX_CHARS = 8000
MEMORY_MAX_MESSAGES = 40
DEFAULT_SYSTEM = "You are a helpful assistant. Use the tools when they help; answer concisely."

TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"enum": ["workflow", "http", "vector_search"]},
        "name": {"type": "string", "pattern": TOOL_NAME.pattern},
        "description": {"type": "string"},
        "workflow": {"type": ["string", "integer"]},
        "collection": {"type": ["string", "integer"]},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
        "method": {"type": "string"},
        "url": {"type": "string"},
        "headers": {"type": "object"},
        "query": {"type": "object"},
        "body": {},
        "body_type": {"enum": ["none", "json", "form", "raw"]},
        "credential": {"type": ["string", "integer"]},
        "parameters": {"type": "object", "description": "JSON schema of the arguments (http tools)."},
    },
    "required": ["type"],
}


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Any]

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_")[:64] or "tool"


def _json_type(declared: str) -> str:
    return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "text": "string"}.get(
        declared, declared if declared in {"string", "integer", "number", "boolean", "array", "object"} else "string"
    )


def _truncate(value: Any) -> Any:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) <= RESULT_MAX_CHARS:
        return value
    return text[:RESULT_MAX_CHARS] + "…"


# -- tool builders -----------------------------------------------------------------------------------------


def workflow_tool(ctx: NodeContext, spec: dict[str, Any]) -> Tool:
    from workflows.models import Workflow

    ref = spec.get("workflow")
    queryset = Workflow.objects.filter(workspace_id=ctx.workspace_id, archived_at__isnull=True)
    workflow = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        workflow = queryset.filter(pk=int(ref)).first()
    if workflow is None and isinstance(ref, str):
        workflow = queryset.filter(slug=ref).first() or queryset.filter(name=ref).first()
    if workflow is None:
        raise NodeError(f"Agent tool: no workflow {ref!r} in this workspace.", retryable=False)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, declared in (workflow.inputs or {}).items():
        declared = declared if isinstance(declared, dict) else {"type": str(declared)}
        prop: dict[str, Any] = {"type": _json_type(str(declared.get("type", "string")))}
        if declared.get("description"):
            prop["description"] = str(declared["description"])
        properties[name] = prop
        if declared.get("required"):
            required.append(name)

    def run(args: dict[str, Any]) -> Any:
        from runs.models import Run
        from runs.services import run_start

        parent = Run.objects.filter(pk=ctx.run_id).first() if ctx.run_id else None
        user = None
        if ctx.user_id is not None:
            from accounts.models import User

            user = User.objects.filter(pk=ctx.user_id).first()
        try:
            child = run_start(
                workflow=workflow,
                user=user,
                inputs=args,
                trigger="agent",
                mode="sync",
                parent=parent,
                parent_node_id=ctx.node_id,
            )
        except ValidationError as exc:
            return {"error": "; ".join(exc.messages)}
        if child.status != "succeeded":
            return {"error": child.error or f"The workflow run ended {child.status}.", "run_id": child.pk}
        return child.outputs

    return Tool(
        name=_slug(spec.get("name") or workflow.slug or workflow.name),
        description=spec.get("description") or workflow.description or f"Run the workflow {workflow.name!r}.",
        parameters={"type": "object", "properties": properties, "required": required},
        run=run,
    )


def http_tool(ctx: NodeContext, spec: dict[str, Any]) -> Tool:
    from . import get_node_type

    http_node = get_node_type("http_request")
    if http_node is None:
        raise NodeError("Agent tool: HTTP requests are not available in this installation.", retryable=False)
    if not spec.get("name") or not spec.get("url"):
        raise NodeError("Agent tool: an HTTP tool needs a name and a url.", retryable=False)
    config = {
        key: spec[key]
        for key in ("method", "url", "headers", "query", "body", "body_type", "credential")
        if key in spec
    }
    config.setdefault("timeout", 30)

    def run(args: dict[str, Any]) -> Any:
        from .base import NodeContext as Context

        sub = Context(
            node_id=ctx.node_id,
            node_type="http_request",
            config=config,
            context={**ctx.context, "args": args},
            run_id=ctx.run_id,
            workspace_id=ctx.workspace_id,
            user_id=ctx.user_id,
            attempt=ctx.attempt,
            idempotency_key=f"{ctx.idempotency_key}:{spec['name']}:{json.dumps(args, sort_keys=True)}"[:255],
            deadline=ctx.deadline,
            cancel_event=ctx.cancel_event,
            emit_callback=None,
        )
        try:
            output = http_node.execute(sub)
        except NodeError as exc:
            return {"error": exc.message}
        return {key: output.get(key) for key in ("status", "json", "text") if key in output} or output

    return Tool(
        name=_slug(spec["name"]),
        description=spec.get("description") or f"HTTP {config.get('method', 'GET')} {spec['url']}",
        parameters=spec.get("parameters") or {"type": "object", "properties": {}},
        run=run,
    )


def vector_tool(ctx: NodeContext, spec: dict[str, Any]) -> Tool:
    from providers.collections import collection_get, collection_search

    try:
        collection = collection_get(workspace_id=ctx.workspace_id, ref=spec.get("collection"))
    except ValidationError as exc:
        raise NodeError(f"Agent tool: {' '.join(exc.messages)}", retryable=False) from exc
    top_k = int(spec.get("top_k", 4))

    def run(args: dict[str, Any]) -> Any:
        query = str(args.get("query") or "").strip()
        if not query:
            return {"error": "Give a query."}
        hits = collection_search(collection=collection, query=query, top_k=top_k)
        return [
            {"score": hit["score"], "text": hit["text"], "source": hit["source"], "title": hit["title"]} for hit in hits
        ]

    return Tool(
        name=_slug(spec.get("name") or f"search_{collection.name}"),
        description=spec.get("description") or f"Search the {collection.name!r} collection: {collection.description}",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What to look for."}},
            "required": ["query"],
        },
        run=run,
    )


BUILDERS = {"workflow": workflow_tool, "http": http_tool, "vector_search": vector_tool}


# -- memory -------------------------------------------------------------------------------------------------


def memory_load(workspace_id: int, session: str) -> list[BaseMessage]:
    from providers.models import ConversationMemory

    memory = ConversationMemory.objects.filter(workspace_id=workspace_id, session=session).first()
    messages: list[BaseMessage] = []
    for item in memory.messages if memory else []:
        if item.get("role") == "user":
            messages.append(HumanMessage(content=item.get("content", "")))
        elif item.get("role") == "assistant":
            messages.append(AIMessage(content=item.get("content", "")))
    return messages


def memory_append(workspace_id: int, session: str, new: list[dict[str, str]]) -> None:
    from providers.models import ConversationMemory

    with transaction.atomic():
        memory, _ = ConversationMemory.objects.select_for_update().get_or_create(
            workspace_id=workspace_id, session=session
        )
        memory.messages = [*memory.messages, *new][-MEMORY_MAX_MESSAGES:]
        memory.save(update_fields=["messages", "updated_at"])


# -- the node -----------------------------------------------------------------------------------------------


@register
class AgentNode(NodeType):
    name = "agent"
    label = "Agent"
    description = "A model that calls tools (workflows, HTTP presets, vector search) until it can answer."
    category = "ai"
    icon = "✧"
    config_schema = {
        "type": "object",
        "properties": {
            **PROVIDER_PROPERTIES,
            "system": {"type": "string"},
            "prompt": {"type": "string", "minLength": 1},
            "tools": {"type": "array", "items": TOOL_SCHEMA, "maxItems": 32},
            "max_steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": 6},
            "session": {"type": "string", "description": "Keep the conversation across runs under this key."},
        },
        "required": ["prompt"],
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        from workflows import templating

        errors = []
        for key in ("system", "prompt", "session"):
            if isinstance(config.get(key), str) and (problem := templating.check_syntax(config[key])):
                errors.append(ConfigError(f"config.{key}", problem))
        for index, tool in enumerate(config.get("tools") or []):
            if tool["type"] == "workflow" and tool.get("workflow") in (None, ""):
                errors.append(ConfigError(f"config.tools.{index}.workflow", "Name the workflow to call."))
            if tool["type"] == "vector_search" and tool.get("collection") in (None, ""):
                errors.append(ConfigError(f"config.tools.{index}.collection", "Name the collection to search."))
            if tool["type"] == "http" and not (tool.get("name") and tool.get("url")):
                errors.append(ConfigError(f"config.tools.{index}", "An HTTP tool needs a name and a url."))
        provider = config.get("provider") or "local"
        if provider not in ("local", "ollama") and config.get("credential") in (None, ""):
            errors.append(ConfigError("config.credential", f"The {provider} provider needs a credential."))
        return errors

    def execute(self, ctx: NodeContext) -> dict[str, Any]:
        from providers.llm import chat_model_for

        config = ctx.config
        if errors := self.validate_config(config):
            raise NodeError("; ".join(map(str, errors)), retryable=False)
        resolved = resolve_llm(ctx, config)
        tools: dict[str, Tool] = {}
        for spec in config.get("tools") or []:
            tool = BUILDERS[spec["type"]](ctx, spec)
            if tool.name in tools:
                raise NodeError(f"Two agent tools are named {tool.name!r}; give one a name.", retryable=False)
            tools[tool.name] = tool
        max_tokens = int(config.get("max_tokens") or 512)
        watch = CancelWatch(ctx, config.get("timeout"))
        model = chat_model_for(
            resolved,
            temperature=float(config.get("temperature") or 0),
            max_tokens=max_tokens,
            timeout=config.get("timeout") or ctx.time_left(),
            cancel_event=watch,
        )
        if tools:
            try:
                model = model.bind_tools([tool.spec() for tool in tools.values()])
            except NotImplementedError as exc:
                raise NodeError(
                    f"The {resolved.provider} model {resolved.model!r} does not support tool calling.",
                    retryable=False,
                ) from exc

        prompt = ctx.render_text(config["prompt"])
        session = ctx.render_text(config["session"]).strip()[:200] if config.get("session") else ""
        history = memory_load(ctx.workspace_id, session) if session and ctx.workspace_id else []
        messages: list[BaseMessage] = [
            SystemMessage(content=ctx.render_text(config["system"]) if config.get("system") else DEFAULT_SYSTEM),
            *history,
            HumanMessage(content=prompt),
        ]
        max_steps = int(config.get("max_steps", 6))
        calls: list[dict[str, Any]] = []
        totals = {"input_tokens": 0, "output_tokens": 0}
        answer: str | None = None
        for step in range(1, max_steps + 1):
            outcome = chat_once(
                ctx, model=model, resolved=resolved, messages=messages, max_tokens=max_tokens, watch=watch
            )
            totals["input_tokens"] += outcome.input_tokens
            totals["output_tokens"] += outcome.output_tokens
            messages.append(outcome.message)
            if not outcome.message.tool_calls:
                answer = outcome.text
                break
            for call in outcome.message.tool_calls:
                ctx.check_cancelled()
                name, args, call_id = call["name"], call.get("args") or {}, call.get("id") or f"call_{len(calls)}"
                ctx.emit("agent.tool_call", {"step": step, "id": call_id, "name": name, "args": args})
                tool = tools.get(name)
                if tool is None:
                    result: Any = {"error": f"There is no tool named {name!r}."}
                else:
                    try:
                        result = tool.run(args if isinstance(args, dict) else {})
                    except (NodeCancelled, NodeError):
                        raise
                    except Exception as exc:  # a tool failing is information for the model, not a crash
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                result = _truncate(result)
                ctx.emit("agent.tool_result", {"step": step, "id": call_id, "name": name, "result": result})
                calls.append({"step": step, "id": call_id, "name": name, "args": args, "result": result})
                content = result if isinstance(result, str) else json.dumps(result, default=str)
                messages.append(ToolMessage(content=content, tool_call_id=call_id, name=name))
        if answer is None:
            raise NodeError(
                f"The agent did not finish within {max_steps} steps ({len(calls)} tool calls).",
                retryable=False,
                data={"tool_calls": calls},
            )
        if session and ctx.workspace_id:
            memory_append(
                ctx.workspace_id,
                session,
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            )
        return {
            "text": answer,
            "steps": step,
            "tool_calls": calls,
            "model": resolved.model,
            "provider": resolved.provider,
            "session": session or None,
            **totals,
        }
