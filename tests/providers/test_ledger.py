"""The token ledger and budgets: every call recorded; a call that could exceed a budget is never made."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from providers import ledger
from providers.choices import CredentialKind
from providers.credentials import credential_create
from providers.models import TokenUsage
from runs.models import Run
from runs.services import run_start
from tests.providers.fakes import FakeProvider
from workflows.nodes import NodeContext, get_node_type
from workflows.services import workflow_import, workflow_publish


@pytest.fixture
def fake():
    with FakeProvider("openai", default_text="one two three") as server:
        yield server


@pytest.fixture
def credential(workspace, user, fake):
    return credential_create(
        workspace=workspace,
        user=user,
        name="openai",
        kind=CredentialKind.LLM,
        provider="openai",
        base_url=fake.base_url,
        default_model="gpt-4o-mini",
        secret="sk-ledger",
    )


def workflow_with_llm(workspace, user, *, max_tokens: int = 50, calls: int = 1):
    nodes = [
        {
            "id": f"ask{i}",
            "type": "llm_call",
            "config": {"credential": "openai", "prompt": "hi", "max_tokens": max_tokens},
        }
        for i in range(calls)
    ]
    edges = [{"source": f"ask{i}", "target": f"ask{i + 1}"} for i in range(calls - 1)]
    document = {"format": "graphwright/v1", "name": "ask", "nodes": nodes, "edges": edges}
    return workflow_import(workspace=workspace, user=user, document=document)


def test_prices_and_costs():
    assert ledger.price_for("openai", "gpt-4o-mini-2024-07-18") == ledger.PRICES_PER_MILLION["gpt-4o-mini"]
    assert ledger.price_for("openai", "gpt-4o") == ledger.PRICES_PER_MILLION["gpt-4o"]
    assert ledger.price_for("local", "gpt-4o") == (0, 0)
    cost = ledger.estimate_cost(provider="openai", model="gpt-4o", input_tokens=1_000_000, output_tokens=500_000)
    assert cost == Decimal("7.500000")
    assert ledger.estimate_cost(provider="openai_compatible", model="mystery", input_tokens=10, output_tokens=10) == 0


@pytest.mark.django_db
def test_usage_record_and_sums(workspace, user):
    for i in range(3):
        ledger.usage_record(
            workspace_id=workspace.pk,
            user_id=user.pk,
            provider="openai",
            model="gpt-4o-mini",
            input_tokens=100 * (i + 1),
            output_tokens=10 * (i + 1),
            node_id="n",
        )
    summary = ledger.usage_summary(TokenUsage.objects.filter(user=user))
    assert summary["calls"] == 3
    assert summary["input_tokens"] == 600 and summary["output_tokens"] == 60 and summary["total_tokens"] == 660
    expected = sum(
        ledger.estimate_cost(provider="openai", model="gpt-4o-mini", input_tokens=100 * k, output_tokens=10 * k)
        for k in (1, 2, 3)
    )
    assert summary["cost_usd"] == expected
    assert ledger.user_tokens_this_month(user.pk) == 660
    # Last month's usage does not count against this month's budget.
    TokenUsage.objects.filter(input_tokens=100).update(created_at=ledger.month_start() - dt.timedelta(days=1))
    assert ledger.user_tokens_this_month(user.pk) == 550


@pytest.mark.django_db
def test_user_monthly_budget_fails_before_the_call(workspace, user, make_ctx_for_llm, fake, credential):
    user.monthly_token_budget = 100
    user.save()
    ledger.usage_record(
        workspace_id=workspace.pk,
        user_id=user.pk,
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=60,
        output_tokens=20,
    )
    node = get_node_type("llm_call")
    with pytest.raises(ledger.BudgetExceeded, match="Monthly token budget exceeded") as raised:
        node.execute(make_ctx_for_llm({"credential": "openai", "prompt": "hi", "max_tokens": 50}))
    assert raised.value.retryable is False
    assert fake.chat_requests() == []  # the call was never made
    assert TokenUsage.objects.count() == 1
    # Within the budget it goes through and is recorded.
    node.execute(make_ctx_for_llm({"credential": "openai", "prompt": "hi", "max_tokens": 10}))
    assert len(fake.chat_requests()) == 1
    assert TokenUsage.objects.filter(user=user).count() == 2


@pytest.fixture
def make_ctx_for_llm(workspace, user):
    def make(config, **extra):
        return NodeContext(
            node_id="ask", node_type="llm_call", config=config, workspace_id=workspace.pk, user_id=user.pk, **extra
        )

    return make


@pytest.mark.django_db(transaction=True)
def test_run_budget_fails_the_node_before_the_call_and_sums_match(workspace, user, fake, credential):
    # Each call: 11 prompt tokens + 3 completion tokens (the fake's usage) = 14.
    workflow = workflow_with_llm(workspace, user, max_tokens=10, calls=3)
    run = run_start(workflow=workflow, user=user, mode="sync", token_budget=38)
    assert run.status == "failed"
    failed = run.node_runs.get(node_id="ask2")
    assert failed.status == "failed" and "Token budget of this run exceeded" in failed.error
    assert failed.attempt == 1  # not retried: the budget will not grow by waiting
    assert len(fake.chat_requests()) == 2
    rows = TokenUsage.objects.filter(run=run)
    assert rows.count() == 2 and {r.node_id for r in rows} == {"ask0", "ask1"}
    assert ledger.run_tokens_used(run.pk) == 28 == sum(r.input_tokens + r.output_tokens for r in rows)
    outputs = [run.node_runs.get(node_id=f"ask{i}").output for i in range(2)]
    assert sum(o["input_tokens"] + o["output_tokens"] for o in outputs) == 28
    assert all(r.user_id == user.pk and r.provider == "openai" and r.cost_usd > 0 for r in rows)


@pytest.mark.django_db(transaction=True)
def test_run_without_budget_records_every_call(workspace, user, fake, credential):
    run = run_start(workflow=workflow_with_llm(workspace, user, calls=2), user=user, mode="sync")
    assert run.status == "succeeded", run.error
    assert TokenUsage.objects.filter(run=run).count() == 2
    summary = ledger.usage_summary(TokenUsage.objects.filter(run=run))
    assert summary["total_tokens"] == 28


@pytest.mark.django_db
def test_parent_run_budget_applies_to_child_runs(workspace, user, fake, credential):
    workflow = workflow_with_llm(workspace, user)
    version = workflow_publish(workflow=workflow, user=user)
    parent = Run.objects.create(workspace=workspace, workflow=workflow, version=version, token_budget=20)
    child = Run.objects.create(workspace=workspace, workflow=workflow, version=version, parent=parent)
    ledger.usage_record(
        workspace_id=workspace.pk, run_id=child.pk, provider="openai", model="m", input_tokens=15, output_tokens=0
    )
    with pytest.raises(ledger.BudgetExceeded, match=f"parent run #{parent.pk}"):
        ledger.budget_check(run_id=child.pk, user_id=None, planned_tokens=10)
    ledger.budget_check(run_id=child.pk, user_id=None, planned_tokens=5)  # 15 + 5 fits in 20
    assert timezone.now() >= ledger.month_start()
