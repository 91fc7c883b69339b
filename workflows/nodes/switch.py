"""``switch``: follow the first case that matches, else ``default``."""

from __future__ import annotations

from typing import Any

from . import register
from .base import ConfigError, NodeContext, NodeResult, NodeType
from .condition import expression_error

DEFAULT_BRANCH = "default"


@register
class SwitchNode(NodeType):
    name = "switch"
    label = "Switch"
    description = "Pick one branch: the first case whose value equals `value` (or whose `when` holds)."
    icon = "⑂"
    config_schema = {
        "type": "object",
        "required": ["cases"],
        "properties": {
            "value": {"type": "string", "description": "An expression compared with each case's `equals`."},
            "cases": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        "equals": {},
                        "when": {"type": "string", "minLength": 1},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    }

    def branches_for(self, config: dict[str, Any]) -> tuple[str, ...]:
        cases = config.get("cases") if isinstance(config, dict) else None
        names = [c["name"] for c in cases or [] if isinstance(c, dict) and isinstance(c.get("name"), str)]
        return (*names, DEFAULT_BRANCH)

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        errors: list[ConfigError] = []
        seen: set[str] = set()
        if "value" in config:
            errors += expression_error(config["value"], "config.value")
        for i, case in enumerate(config["cases"]):
            path = f"config.cases.{i}"
            if case["name"] in seen or case["name"] in (DEFAULT_BRANCH, "error"):
                errors.append(ConfigError(f"{path}.name", f"Case name {case['name']!r} is taken."))
            seen.add(case["name"])
            if "when" in case:
                errors += expression_error(case["when"], f"{path}.when")
            elif "equals" not in case:
                errors.append(ConfigError(path, "A case needs `equals` (with `value`) or `when`."))
            elif "value" not in config:
                errors.append(ConfigError("config.value", "Cases with `equals` need a `value` expression."))
        return errors

    def execute(self, ctx: NodeContext) -> NodeResult:
        value = ctx.evaluate(ctx.config["value"]) if ctx.config.get("value") else None
        for case in ctx.config.get("cases", []):
            if "when" in case:
                matched = bool(ctx.evaluate(case["when"], {"value": value}))
            else:
                matched = value == ctx.render(case.get("equals"))
            if matched:
                return NodeResult(output={"branch": case["name"], "value": value}, branch=case["name"])
        return NodeResult(output={"branch": DEFAULT_BRANCH, "value": value}, branch=DEFAULT_BRANCH)
