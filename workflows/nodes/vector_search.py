"""``vector_search``: the chunks of a collection most similar to a (templated) query."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from . import register
from .base import ConfigError, NodeContext, NodeError, NodeType


def validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{key}: {' '.join(messages)}" for key, messages in exc.message_dict.items())
    return " ".join(exc.messages)


def format_context(results: list[dict[str, Any]]) -> str:
    """The hits as numbered passages, ready to paste into a prompt and cite as [1], [2], …"""
    return "\n\n".join(
        f"[{hit['rank']}] {hit.get('title') or hit.get('source') or 'document'}: {hit['text']}" for hit in results
    )


@register
class VectorSearchNode(NodeType):
    name = "vector_search"
    label = "Vector search"
    description = "Find the chunks of a collection closest to a query; outputs ranked passages with sources."
    category = "ai"
    icon = "⌕"
    config_schema = {
        "type": "object",
        "properties": {
            "collection": {"type": ["string", "integer"], "description": "Collection id or name."},
            "query": {"type": "string", "minLength": 1, "description": "Search text (template)."},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 200, "default": 4},
            "score_threshold": {"type": "number", "minimum": -1, "maximum": 1},
            "filters": {
                "type": ["object", "string"],
                "description": 'Metadata filters: {"topic": "x"}, {"year": {"$gte": 2020}}, or a template.',
            },
        },
        "required": ["collection", "query"],
        "additionalProperties": False,
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        from workflows import templating

        errors = []
        if isinstance(config.get("query"), str) and (problem := templating.check_syntax(config["query"])):
            errors.append(ConfigError("config.query", problem))
        return errors

    def collection_for(self, ctx: NodeContext, ref: Any) -> Any:
        """The collection named ``ref``; the demo collection is seeded on first use so the demo runs as is."""
        from providers.collections import DEMO_COLLECTION_NAME, collection_get, demo_collection_seed

        try:
            return collection_get(workspace_id=ctx.workspace_id, ref=ref)
        except ValidationError:
            if ref != DEMO_COLLECTION_NAME or ctx.workspace_id is None:
                raise
        from accounts.models import Workspace

        ctx.log(f"Seeding the demo collection {DEMO_COLLECTION_NAME!r}.")
        return demo_collection_seed(workspace=Workspace.objects.get(pk=ctx.workspace_id), user=None)

    def execute(self, ctx: NodeContext) -> dict[str, Any]:
        from providers.collections import collection_search

        config = ctx.config
        if errors := self.validate_config(config):
            raise NodeError("; ".join(map(str, errors)), retryable=False)
        query = str(ctx.render(config["query"]) or "").strip()
        if not query:
            raise NodeError("The rendered query is empty.", retryable=False)
        filters = ctx.render(config.get("filters")) or None
        ref = ctx.render(config["collection"])
        try:
            collection = self.collection_for(ctx, ref)
            ctx.check_cancelled()
            results = collection_search(
                collection=collection,
                query=query,
                top_k=int(config.get("top_k", 4)),
                score_threshold=config.get("score_threshold"),
                filters=filters,
            )
        except ValidationError as exc:
            raise NodeError(validation_message(exc), retryable=False) from exc
        return {
            "query": query,
            "collection": {"id": collection.pk, "name": collection.name},
            "results": results,
            "count": len(results),
            "context": format_context(results),
        }
