"""``condition``: evaluate a Jinja2 expression and follow the ``true`` or ``false`` branch."""

from __future__ import annotations

from typing import Any

from workflows import templating

from . import register
from .base import ConfigError, NodeContext, NodeResult, NodeType


def expression_error(expression: str, path: str) -> list[ConfigError]:
    error = templating.check_syntax("{{ " + expression + " }}")
    return [ConfigError(path, f"Expression syntax error: {error}")] if error else []


@register
class ConditionNode(NodeType):
    name = "condition"
    label = "Condition"
    description = "Branch on an expression: edges labelled true or false are followed."
    icon = "◇"
    branches = ("true", "false")
    config_schema = {
        "type": "object",
        "required": ["expression"],
        "properties": {
            "expression": {"type": "string", "minLength": 1, "description": "e.g. inputs.n > 3"},
        },
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        return expression_error(config["expression"], "config.expression")

    def execute(self, ctx: NodeContext) -> NodeResult:
        value = ctx.evaluate(ctx.config["expression"])
        taken = "true" if value else "false"
        return NodeResult(output={"result": bool(value), "branch": taken}, branch=taken)
