"""The vector_search node, and the demo RAG workflow end to end through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from providers.collections import DEMO_COLLECTION_NAME, collection_create, document_add
from providers.models import Collection, TokenUsage
from runs.models import Artifact, RunEvent
from runs.services import run_start
from workflows.nodes import NodeError, get_node_type
from workflows.services import workflow_import

DEMO = Path(__file__).resolve().parents[2] / "workflows" / "demo" / "rag_answer.json"


@pytest.fixture
def node():
    return get_node_type("vector_search")


@pytest.fixture
def planets(workspace, user, embedder):
    collection = collection_create(workspace=workspace, user=user, name="planets")
    document_add(
        collection=collection,
        user=user,
        title="Mars",
        source="mars.txt",
        metadata={"kind": "rocky"},
        text="Mars is the red planet; its iron oxide dust gives it a rusty colour.",
    )
    document_add(
        collection=collection,
        user=user,
        title="Jupiter",
        source="jupiter.txt",
        metadata={"kind": "gas"},
        text="Jupiter is a gas giant with a great red spot, a storm larger than Earth.",
    )
    document_add(
        collection=collection,
        user=user,
        title="Venus",
        source="venus.txt",
        metadata={"kind": "rocky"},
        text="Venus has a thick carbon dioxide atmosphere and is the hottest planet.",
    )
    return collection


@pytest.mark.django_db
def test_templated_query_ranked_results(node, make_ctx, planets):
    config = {"collection": "planets", "query": "Which planet is {{ inputs.colour }} from rust?", "top_k": 2}
    output = node.execute(make_ctx("vector_search", config, context={"inputs": {"colour": "red"}}))
    assert output["query"] == "Which planet is red from rust?"
    assert output["count"] == 2 and output["results"][0]["title"] == "Mars"
    first = output["results"][0]
    assert first["source"] == "mars.txt" and first["metadata"] == {"kind": "rocky"}
    assert isinstance(first["document_id"], int) and first["score"] >= output["results"][1]["score"]
    assert output["context"].startswith("[1] Mars: Mars is the red planet")


@pytest.mark.django_db
def test_filters_threshold_and_collection_by_id(node, make_ctx, planets):
    config = {"collection": planets.pk, "query": "a big storm", "top_k": 3, "filters": {"kind": "rocky"}}
    output = node.execute(make_ctx("vector_search", config))
    assert {r["title"] for r in output["results"]} == {"Mars", "Venus"}
    config = {"collection": "planets", "query": "a big storm", "top_k": 3, "score_threshold": 0.99}
    assert node.execute(make_ctx("vector_search", config))["results"] == []


@pytest.mark.django_db
def test_clear_errors(node, make_ctx, planets):
    with pytest.raises(NodeError, match="No collection 'moons'") as raised:
        node.execute(make_ctx("vector_search", {"collection": "moons", "query": "x"}))
    assert raised.value.retryable is False
    with pytest.raises(NodeError, match="empty"):
        node.execute(make_ctx("vector_search", {"collection": "planets", "query": "{{ inputs.missing }}"}))
    with pytest.raises(NodeError, match="Unknown operator"):
        node.execute(make_ctx("vector_search", {"collection": "planets", "query": "x", "filters": {"a": {"$x": 1}}}))
    assert "collection" in str(node.validate_config({"query": "x"})[0])
    assert node.validate_config({"collection": "planets", "query": "{{ x"})[0].path == "config.query"


@pytest.mark.django_db(transaction=True)
def test_demo_rag_workflow_runs_on_local_models(workspace, user, local_llm, embedder):
    workflow = workflow_import(workspace=workspace, user=user, document=json.loads(DEMO.read_text()))
    run = run_start(workflow=workflow, user=user, mode="sync")
    assert run.status == "succeeded", run.error
    # The demo collection was seeded on first use: the demo needs no setup.
    assert Collection.objects.filter(workspace=workspace, name=DEMO_COLLECTION_NAME).exists()

    answer = run.node_runs.get(node_id="answer").output
    assert answer["provider"] == "local" and answer["text"].strip()
    search = run.node_runs.get(node_id="search").output
    assert search["results"][0]["source"] == "guide/models.md"

    tokens = RunEvent.objects.filter(run=run, type="llm.token")
    assert tokens.count() >= 2
    assert "".join(e.data["text"] for e in tokens.order_by("seq")) == answer["text"]

    artifact = Artifact.objects.get(run=run, name="sources.json")
    with artifact.file.open("rb") as handle:
        saved = json.loads(handle.read())
    assert saved["answer"] == answer["text"]
    assert [s["source"] for s in saved["sources"]] == [r["source"] for r in search["results"]]
    assert all(isinstance(s["cited"], bool) for s in saved["sources"])

    usage = TokenUsage.objects.get(run=run)
    assert usage.node_id == "answer" and usage.output_tokens == answer["output_tokens"]
