"""The agent node against a loopback server speaking the OpenAI protocol that returns tool calls."""

from __future__ import annotations

import pytest

from providers.choices import CredentialKind
from providers.collections import collection_create, document_add
from providers.credentials import credential_create
from providers.models import ConversationMemory, TokenUsage
from tests.providers.fakes import FakeProvider
from tests.providers.loopback import start_server
from workflows.nodes import NodeError, get_node_type


@pytest.fixture
def node():
    return get_node_type("agent")


@pytest.fixture
def fake():
    with FakeProvider("openai") as server:
        yield server


@pytest.fixture
def credential(workspace, user, fake):
    return credential_create(
        workspace=workspace,
        user=user,
        name="llm",
        kind=CredentialKind.LLM,
        provider="openai_compatible",
        base_url=fake.base_url,
        default_model="tool-model",
        secret="sk-agent-key",
    )


@pytest.fixture
def facts(workspace, user, embedder):
    collection = collection_create(workspace=workspace, user=user, name="facts", description="Animal facts")
    document_add(collection=collection, user=user, title="Owls", source="owls.md", text="Owls hunt at night.")
    document_add(collection=collection, user=user, title="Bees", source="bees.md", text="Bees make honey from nectar.")
    return collection


@pytest.mark.django_db
def test_vector_search_tool_call_and_answer(node, make_ctx, recorder, fake, credential, facts):
    fake.reply(tool_calls=[{"id": "call_1", "name": "search_facts", "args": {"query": "what do bees make"}}])
    fake.reply("Bees make honey [1].")
    config = {
        "credential": "llm",
        "prompt": "What do bees make?",
        "tools": [{"type": "vector_search", "collection": "facts", "top_k": 1}],
    }
    output = node.execute(make_ctx("agent", config))
    assert output["text"] == "Bees make honey [1]."
    assert output["steps"] == 2
    assert output["tool_calls"][0]["name"] == "search_facts"
    assert output["tool_calls"][0]["result"][0]["title"] == "Bees"

    calls, results = recorder.of_type("agent.tool_call"), recorder.of_type("agent.tool_result")
    assert calls == [
        {"node_id": "agent", "step": 1, "id": "call_1", "name": "search_facts", "args": {"query": "what do bees make"}}
    ]
    assert results[0]["result"][0]["source"] == "bees.md"

    first, second = fake.chat_requests()
    tool_names = [t["function"]["name"] for t in first.body["tools"]]
    assert tool_names == ["search_facts"]
    # The second request carries the assistant's tool call and the tool's result.
    tool_message = second.body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    assert "honey" in tool_message["content"]
    assert TokenUsage.objects.filter(provider="openai_compatible").count() == 2


@pytest.mark.django_db
def test_http_tool_goes_through_the_http_request_node(node, make_ctx, recorder, fake, credential, settings):
    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    server = start_server()
    try:
        fake.reply(tool_calls=[{"id": "c1", "name": "echo", "args": {"city": "Oslo"}}])
        fake.reply("It echoed Oslo.")
        tool = {
            "type": "http",
            "name": "echo",
            "description": "Echo a city",
            "method": "GET",
            "url": server.url("/echo") + "?city={{ args.city }}",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
        output = node.execute(make_ctx("agent", {"credential": "llm", "prompt": "Echo Oslo", "tools": [tool]}))
    finally:
        server.stop()
    assert output["text"] == "It echoed Oslo."
    assert server.requests[0].path == "/echo?city=Oslo"
    assert output["tool_calls"][0]["result"]["json"]["query"] == {"city": "Oslo"}
    assert fake.chat_requests()[0].body["tools"][0]["function"]["parameters"]["required"] == ["city"]


@pytest.mark.django_db
def test_http_tool_is_ssrf_guarded(node, make_ctx, fake, credential, settings):
    settings.SSRF_ALLOWLIST = []
    fake.reply(tool_calls=[{"id": "c1", "name": "internal", "args": {}}])
    fake.reply("I could not reach it.")
    tool = {"type": "http", "name": "internal", "url": "http://127.0.0.1:9/secret"}
    output = node.execute(make_ctx("agent", {"credential": "llm", "prompt": "x", "tools": [tool]}))
    assert "error" in output["tool_calls"][0]["result"]
    assert output["text"] == "I could not reach it."


@pytest.mark.django_db
def test_max_steps_and_unknown_tools(node, make_ctx, recorder, fake, credential, facts):
    for i in range(3):
        fake.reply(tool_calls=[{"id": f"c{i}", "name": "nope", "args": {}}])
    config = {
        "credential": "llm",
        "prompt": "loop",
        "max_steps": 2,
        "tools": [{"type": "vector_search", "collection": "facts"}],
    }
    with pytest.raises(NodeError, match="did not finish within 2 steps") as raised:
        node.execute(make_ctx("agent", config))
    assert raised.value.retryable is False
    results = recorder.of_type("agent.tool_result")
    assert len(results) == 2 and "no tool named 'nope'" in results[0]["result"]["error"]
    assert len(fake.chat_requests()) == 2


@pytest.mark.django_db
def test_session_memory_across_runs(node, make_ctx, fake, credential, workspace):
    fake.reply("Nice to meet you, Ada.")
    fake.reply("Your name is Ada.")
    config = {"credential": "llm", "prompt": "{{ inputs.say }}", "session": "chat-{{ inputs.who }}"}
    node.execute(make_ctx("agent", config, context={"inputs": {"say": "I am Ada.", "who": "ada"}}))
    output = node.execute(make_ctx("agent", config, context={"inputs": {"say": "Who am I?", "who": "ada"}}))
    assert output["session"] == "chat-ada"
    second = fake.chat_requests()[1].body["messages"]
    contents = [m.get("content") for m in second]
    assert contents[1:] == ["I am Ada.", "Nice to meet you, Ada.", "Who am I?"]
    memory = ConversationMemory.objects.get(workspace=workspace, session="chat-ada")
    assert [m["role"] for m in memory.messages] == ["user", "assistant", "user", "assistant"]


@pytest.mark.django_db
def test_local_model_refuses_tools_clearly(node, make_ctx, facts):
    with pytest.raises(NodeError, match="does not support tool calling"):
        node.execute(make_ctx("agent", {"prompt": "x", "tools": [{"type": "vector_search", "collection": "facts"}]}))


def test_config_errors(node):
    paths = {e.path for e in node.validate_config({"prompt": "x", "tools": [{"type": "workflow"}, {"type": "http"}]})}
    assert {"config.tools.0.workflow", "config.tools.1"} <= paths
    assert any(e.path == "config.credential" for e in node.validate_config({"prompt": "x", "provider": "anthropic"}))


@pytest.mark.django_db(transaction=True)
def test_workflow_tool_runs_a_sub_run_end_to_end(workspace, user, fake, credential):
    from runs.models import Run, RunEvent
    from runs.services import run_start
    from workflows.services import workflow_import

    workflow_import(
        workspace=workspace,
        user=user,
        document={
            "format": "graphwright/v1",
            "name": "Double it",
            "description": "Doubles a number.",
            "inputs": {"x": {"type": "integer", "required": True, "description": "The number"}},
            "nodes": [{"id": "double", "type": "template", "config": {"template": "{{ inputs.x * 2 }}"}}],
            "edges": [],
        },
    )
    agent_workflow = workflow_import(
        workspace=workspace,
        user=user,
        document={
            "format": "graphwright/v1",
            "name": "Agent",
            "nodes": [
                {
                    "id": "agent",
                    "type": "agent",
                    "config": {
                        "credential": "llm",
                        "prompt": "Double 21",
                        "tools": [{"type": "workflow", "workflow": "Double it", "name": "double"}],
                    },
                }
            ],
            "edges": [],
        },
    )
    fake.reply(tool_calls=[{"id": "t1", "name": "double", "args": {"x": 21}}])
    fake.reply("21 doubled is 42.")
    run = run_start(workflow=agent_workflow, user=user, mode="sync")
    assert run.status == "succeeded", run.error
    child = Run.objects.get(parent=run)
    assert child.trigger == "agent" and child.parent_node_id == "agent" and child.status == "succeeded"
    assert child.inputs == {"x": 21}
    output = run.node_runs.get(node_id="agent").output
    assert output["text"] == "21 doubled is 42."
    assert "42" in str(output["tool_calls"][0]["result"])
    spec = fake.chat_requests()[0].body["tools"][0]["function"]
    assert spec["name"] == "double" and spec["parameters"]["properties"]["x"]["type"] == "integer"
    kinds = list(RunEvent.objects.filter(run=run).values_list("type", flat=True))
    assert "agent.tool_call" in kinds and "agent.tool_result" in kinds
