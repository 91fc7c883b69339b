"""``loop``: for each item of a list (or while a condition holds) run a body; output the results.

The body is a sub-workflow run per item (``workflow`` + ``inputs``), or an inline template value
(``body``). Both see ``item`` and ``index``; a ``while`` loop also sees ``results`` and ``last``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import register
from .base import ConfigError, NodeContext, NodeError, NodeType
from .condition import expression_error
from .subworkflow import find_workflow, run_child

HARD_MAX_ITERATIONS = 10_000


@register
class LoopNode(NodeType):
    name = "loop"
    label = "Loop"
    description = "Run a body for each item of a list, or while a condition holds; outputs the list of results."
    icon = "↻"
    config_schema = {
        "type": "object",
        "properties": {
            "items": {"description": "A list, or a template/expression giving one (for-each)."},
            "while": {"type": "string", "minLength": 1, "description": "Keep going while this expression holds."},
            "workflow": {"type": ["string", "integer"], "description": "Sub-workflow run once per item."},
            "inputs": {"type": "object", "description": "Child inputs; default {item, index}."},
            "body": {"description": "Inline body: a template value rendered per item (instead of a workflow)."},
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": HARD_MAX_ITERATIONS, "default": 100},
            "parallelism": {"type": "integer", "minimum": 1, "maximum": 32, "default": 1},
        },
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        errors: list[ConfigError] = []
        if ("items" in config) == ("while" in config):
            errors.append(ConfigError("config", "Give either `items` (for-each) or `while`."))
        if ("workflow" in config) == ("body" in config):
            errors.append(ConfigError("config", "Give either `workflow` (a sub-workflow) or an inline `body`."))
        if "while" in config:
            errors += expression_error(config["while"], "config.while")
            if config.get("parallelism", 1) > 1:
                errors.append(ConfigError("config.parallelism", "A while loop runs one iteration at a time."))
        return errors

    def _body(self, ctx: NodeContext, workflow, item: Any, index: int, extra: dict[str, Any]) -> Any:
        ctx.check_cancelled()
        scope = {"item": item, "index": index, **extra}
        if workflow is None:
            try:
                from workflows import templating

                return templating.render_value(ctx.config.get("body"), {**ctx.context, **scope})
            except templating.TemplateRenderError as exc:
                raise NodeError(f"Iteration {index}: {exc}", retryable=False) from exc
        if ctx.config.get("inputs") is not None:
            from workflows import templating

            try:
                inputs = templating.render_value(ctx.config["inputs"], {**ctx.context, **scope})
            except templating.TemplateRenderError as exc:
                raise NodeError(f"Iteration {index}: {exc}", retryable=False) from exc
        else:
            inputs = {"item": item, "index": index}
        return run_child(ctx, workflow, inputs).outputs

    def execute(self, ctx: NodeContext) -> list[Any]:
        max_iterations = int(ctx.config.get("max_iterations", 100))
        workflow = find_workflow(ctx, ctx.config["workflow"]) if ctx.config.get("workflow") is not None else None
        if "while" in ctx.config:
            results: list[Any] = []
            for index in range(max_iterations):
                scope = {"index": index, "results": results, "last": results[-1] if results else None}
                if not ctx.evaluate(ctx.config["while"], scope):
                    break
                results.append(self._body(ctx, workflow, None, index, {"results": results}))
            return results
        items = ctx.render(ctx.config.get("items"))
        if isinstance(items, dict):
            items = [{"key": key, "value": value} for key, value in items.items()]
        if not isinstance(items, list):
            raise NodeError(f"`items` must be a list, got {type(items).__name__}.", retryable=False)
        if len(items) > max_iterations:
            raise NodeError(f"{len(items)} items exceed max_iterations={max_iterations}.", retryable=False)
        parallelism = max(1, int(ctx.config.get("parallelism", 1)))
        if parallelism == 1 or len(items) < 2:
            return [self._body(ctx, workflow, item, index, {}) for index, item in enumerate(items)]

        def one(pair: tuple[int, Any]) -> Any:
            from django.db import connections

            try:
                return self._body(ctx, workflow, pair[1], pair[0], {})
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix=f"loop-{ctx.node_id}") as pool:
            return list(pool.map(one, enumerate(items)))
