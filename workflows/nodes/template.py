"""``template``: render text, or structured JSON, from the run context."""

from __future__ import annotations

import json
from typing import Any

from workflows import templating

from . import register
from .base import ConfigError, NodeContext, NodeError, NodeType


def _template_errors(value: Any, path: str) -> list[ConfigError]:
    if isinstance(value, str):
        error = templating.check_syntax(value)
        return [ConfigError(path, f"Template syntax error: {error}")] if error else []
    if isinstance(value, dict):
        return [e for key, item in value.items() for e in _template_errors(item, f"{path}.{key}")]
    if isinstance(value, list):
        return [e for i, item in enumerate(value) for e in _template_errors(item, f"{path}.{i}")]
    return []


@register
class TemplateNode(NodeType):
    name = "template"
    label = "Template"
    description = "Render text, or a JSON value, from inputs and earlier nodes' outputs."
    icon = "✎"
    config_schema = {
        "type": "object",
        "required": ["template"],
        "properties": {
            "template": {
                "description": "A Jinja2 template string, or a JSON value whose strings are templates.",
                "type": ["string", "object", "array", "number", "boolean", "null"],
            },
            "output": {"enum": ["text", "json"], "default": "text", "description": "json parses the rendered text."},
        },
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        return _template_errors(config.get("template"), "config.template")

    def execute(self, ctx: NodeContext) -> Any:
        template = ctx.config.get("template", "")
        if isinstance(template, str) and ctx.config.get("output") == "json":
            text = ctx.render_text(template)
            try:
                return json.loads(text)
            except ValueError as exc:
                raise NodeError(f"The rendered template is not JSON: {exc}", retryable=False) from exc
        if isinstance(template, str):
            return ctx.render_text(template)
        return ctx.render(template)
