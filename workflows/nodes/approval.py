"""``approval``: park the run until a person approves or rejects (or the timeout passes).

The run goes to ``waiting`` and frees its worker; ``run_resume`` records the decision and the run
continues down the ``approved``, ``rejected`` or ``timeout`` branch.
"""

from __future__ import annotations

from typing import Any

from . import register
from .base import NodeContext, NodeResult, NodeType


@register
class ApprovalNode(NodeType):
    name = "approval"
    label = "Approval"
    description = "Wait for a person to approve or reject; a timeout follows the timeout branch."
    icon = "✋"
    branches = ("approved", "rejected", "timeout")
    config_schema = {
        "type": "object",
        "properties": {
            "message": {"type": "string", "description": "What the approver sees; a template."},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds before the timeout branch."},
            "approvers": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Usernames allowed to decide (default: anyone who may run the workflow).",
            },
        },
        "additionalProperties": False,
    }

    def execute(self, ctx: NodeContext) -> NodeResult:
        from runs.services import approval_deadline

        output: dict[str, Any] = {
            "message": ctx.render_text(ctx.config.get("message", "")),
            "expires_at": approval_deadline(ctx.config.get("timeout")),
            "approvers": list(ctx.config.get("approvers") or []),
        }
        return NodeResult(output=output, wait=True)
