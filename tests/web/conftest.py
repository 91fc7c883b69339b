"""Web page fixtures: signed-in clients and a small workflow made through the real services."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from runs import services as run_services
from workflows import services as workflow_services

DEFINITION: dict[str, Any] = {
    "format": "graphwright/v1",
    "name": "Greeter",
    "tags": ["demo", "web"],
    "inputs": {"topic": {"type": "string", "required": True}},
    "nodes": [
        {"id": "greet", "type": "template", "name": "Greet", "config": {"template": "Hello {{ inputs.topic }}"}},
        {"id": "shout", "type": "template", "config": {"template": "{{ nodes.greet.output | upper }}"}},
    ],
    "edges": [{"source": "greet", "target": "shout"}],
}


@pytest.fixture
def client_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def other_client(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def workflow(workspace, user):
    return workflow_services.workflow_create(
        workspace=workspace, user=user, name="Greeter", definition=DEFINITION, description="Says hello"
    )


@pytest.fixture
def finished_run(workflow, user):
    return run_services.run_start(workflow=workflow, user=user, inputs={"topic": "world"}, mode="sync")
