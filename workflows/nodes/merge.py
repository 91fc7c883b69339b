"""``merge``: wait for every parent that was not skipped, then combine their outputs."""

from __future__ import annotations

from typing import Any

from . import register
from .base import NodeContext, NodeType


@register
class MergeNode(NodeType):
    name = "merge"
    label = "Merge"
    description = "Join branches: runs once all non-skipped parents are done; outputs their outputs."
    icon = "⋈"
    config_schema = {
        "type": "object",
        "properties": {
            "mode": {
                "enum": ["object", "list", "first"],
                "default": "object",
                "description": "object: {parent id: output}; list: outputs in order; first: the first output.",
            }
        },
        "additionalProperties": False,
    }

    def execute(self, ctx: NodeContext) -> Any:
        parents: dict[str, Any] = ctx.context.get("parents", {})
        mode = ctx.config.get("mode", "object")
        if mode == "list":
            return list(parents.values())
        if mode == "first":
            return next(iter(parents.values()), None)
        return dict(parents)
