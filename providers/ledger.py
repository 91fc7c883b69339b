"""The token ledger and budgets.

Every LLM call writes one :class:`TokenUsage` row (provider, model, tokens, estimated cost) tied to its
run, node and user. Before a call, :func:`budget_check` compares what was already used plus the
worst case of the coming call (its prompt and ``max_tokens``) with the run's ``token_budget`` (and
the budgets of the runs above it, for agent sub-runs) and the user's ``monthly_token_budget``; a
call that could exceed one fails before it is made.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from workflows.nodes.base import NodeError

from .models import TokenUsage

# USD per million tokens (input, output). Estimates for display; unknown models cost 0.
PRICES_PER_MILLION: dict[str, tuple[Decimal, Decimal]] = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("1.60")),
    "gpt-4.1": (Decimal("2.00"), Decimal("8.00")),
    "claude-3-5-haiku": (Decimal("0.80"), Decimal("4.00")),
    "claude-3-5-sonnet": (Decimal("3.00"), Decimal("15.00")),
    "claude-sonnet-4": (Decimal("3.00"), Decimal("15.00")),
    "gemini-2.0-flash": (Decimal("0.10"), Decimal("0.40")),
    "gemini-1.5-flash": (Decimal("0.075"), Decimal("0.30")),
    "gemini-1.5-pro": (Decimal("1.25"), Decimal("5.00")),
    "deepseek-chat": (Decimal("0.27"), Decimal("1.10")),
    "deepseek-reasoner": (Decimal("0.55"), Decimal("2.19")),
}
FREE_PROVIDERS = {"local", "ollama"}
MILLION = Decimal(1_000_000)


class BudgetExceeded(NodeError):
    """A call would go over a token budget; never retried (the budget will not grow by waiting)."""

    def __init__(self, message: str, *, data: dict[str, Any] | None = None):
        super().__init__(message, retryable=False, data=data)


def price_for(provider: str, model: str) -> tuple[Decimal, Decimal]:
    if provider in FREE_PROVIDERS:
        return Decimal(0), Decimal(0)
    name = model.lower().split("/")[-1]
    # Longest matching prefix wins, so "gpt-4o-mini-2024-07-18" is priced as gpt-4o-mini, not gpt-4o.
    for key in sorted(PRICES_PER_MILLION, key=len, reverse=True):
        if name.startswith(key):
            return PRICES_PER_MILLION[key]
    return Decimal(0), Decimal(0)


def estimate_cost(*, provider: str, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price_in, price_out = price_for(provider, model)
    cost = (price_in * input_tokens + price_out * output_tokens) / MILLION
    return cost.quantize(Decimal("0.000001"))


def estimate_tokens(text: str) -> int:
    """A rough count for prompts not yet sent (about four characters per token)."""
    return max(1, len(text) // 4) if text else 0


def usage_record(
    *,
    workspace_id: int,
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    user_id: int | None = None,
    run_id: int | None = None,
    node_id: str = "",
) -> TokenUsage:
    """Write one ledger row for an LLM call."""
    with transaction.atomic():
        return TokenUsage.objects.create(
            workspace_id=workspace_id,
            user_id=user_id,
            run_id=run_id,
            node_id=node_id[:64],
            provider=provider,
            model=model[:200],
            input_tokens=max(0, int(input_tokens)),
            output_tokens=max(0, int(output_tokens)),
            cost_usd=estimate_cost(
                provider=provider, model=model, input_tokens=input_tokens, output_tokens=output_tokens
            ),
        )


def _tokens(queryset) -> int:
    totals = queryset.aggregate(
        input=Coalesce(Sum("input_tokens"), 0),
        output=Coalesce(Sum("output_tokens"), 0),
    )
    return int(totals["input"]) + int(totals["output"])


def run_tokens_used(run_id: int) -> int:
    """Tokens used by a run and every run it started (agent tools, sub-workflows)."""
    from runs.models import Run

    run_ids = {run_id}
    frontier = {run_id}
    while frontier:
        frontier = set(Run.objects.filter(parent_id__in=frontier).values_list("id", flat=True)) - run_ids
        run_ids |= frontier
    return _tokens(TokenUsage.objects.filter(run_id__in=run_ids))


def month_start(now: dt.datetime | None = None) -> dt.datetime:
    now = now or timezone.now()
    return now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def user_tokens_this_month(user_id: int) -> int:
    return _tokens(TokenUsage.objects.filter(user_id=user_id, created_at__gte=month_start()))


def budget_check(*, run_id: int | None, user_id: int | None, planned_tokens: int) -> None:
    """Raise :class:`BudgetExceeded` when ``planned_tokens`` more would exceed a budget."""
    from accounts.models import User
    from runs.models import Run

    seen: set[int] = set()
    current_id = run_id
    while current_id is not None and current_id not in seen:  # this run, then the runs above it
        seen.add(current_id)
        row = Run.objects.filter(pk=current_id).values("token_budget", "parent_id").first()
        if row is None:
            break
        budget = row["token_budget"]
        if budget is not None:
            used = run_tokens_used(current_id)
            if used + planned_tokens > budget:
                which = "this run" if current_id == run_id else f"parent run #{current_id}"
                raise BudgetExceeded(
                    f"Token budget of {which} exceeded: {used:,} tokens used + up to {planned_tokens:,} for this "
                    f"call > budget of {budget:,}. The call was not made.",
                    data={"budget": budget, "used": used, "planned": planned_tokens, "run_id": current_id},
                )
        current_id = row["parent_id"]
    if user_id is not None:
        budget = User.objects.filter(pk=user_id).values_list("monthly_token_budget", flat=True).first()
        if budget is not None:
            used = user_tokens_this_month(user_id)
            if used + planned_tokens > budget:
                raise BudgetExceeded(
                    f"Monthly token budget exceeded: {used:,} tokens used this month + up to {planned_tokens:,} "
                    f"for this call > budget of {budget:,}. The call was not made.",
                    data={"budget": budget, "used": used, "planned": planned_tokens, "user_id": user_id},
                )


def usage_summary(queryset) -> dict[str, Any]:
    """Totals for a TokenUsage queryset (a run, a user, a workspace)."""
    totals = queryset.aggregate(
        input_tokens=Coalesce(Sum("input_tokens"), 0),
        output_tokens=Coalesce(Sum("output_tokens"), 0),
        cost_usd=Coalesce(Sum("cost_usd"), Decimal(0)),
    )
    totals["calls"] = queryset.count()
    totals["total_tokens"] = totals["input_tokens"] + totals["output_tokens"]
    return totals
