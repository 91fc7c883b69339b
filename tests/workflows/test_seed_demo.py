"""seed_demo: idempotent; the demo user, the demo database credential and the sample workflows."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import AuditLog, User
from workflows.graph import validate_definition
from workflows.management.commands.seed_demo import DEMO_PASSWORD, demo_documents
from workflows.models import Edge, Node, Workflow, WorkflowVersion
from workflows.nodes import all_node_types

pytestmark = pytest.mark.django_db(transaction=True)

EVERY_TYPE = {"template", "condition", "switch", "merge", "loop", "subworkflow", "approval", "http_request",
              "db_query", "llm_call", "agent", "vector_search"}  # fmt: skip


def _seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", "--no-collection", stdout=out)
    return out.getvalue()


def _counts() -> tuple[int, ...]:
    return tuple(model.objects.count() for model in (User, Workflow, Node, Edge, WorkflowVersion, AuditLog))


def test_seed_demo_is_idempotent(settings):
    first = _seed()
    assert "username: demo" in first and DEMO_PASSWORD in first and settings.SITE_URL in first
    user = User.objects.get(username="demo")
    assert user.check_password(DEMO_PASSWORD)
    counts = _counts()
    second = _seed()
    assert _counts() == counts
    assert "0 imported" in second
    # Every sample file was either imported (and published) or named in a warning.
    for filename, document in demo_documents():
        workflow = Workflow.objects.filter(name=document["name"], workspace__memberships__user=user).first()
        if workflow is None:
            assert filename in first
        else:
            assert workflow.versions.count() == 1
            assert validate_definition(workflow.versions.get().definition) == []
    assert Workflow.objects.filter(workspace__memberships__user=user).count() >= 3


def test_demo_database_and_credential(settings):
    _seed()
    path = Path(settings.DATA_DIR) / "demo" / "demo.sqlite3"
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT COUNT(*) FROM processed_items").fetchone() == (0,)
    from providers.models import Credential

    credential = Credential.objects.get(name="Demo SQLite")
    assert "demo.sqlite3" not in str(Credential.objects.filter(pk=credential.pk).values().get())  # stored encrypted


def test_sample_files_are_valid_and_cover_every_node_type():
    used = set()
    available = set(all_node_types())
    for filename, document in demo_documents():
        used |= {node["type"] for node in document["nodes"]}
        errors = validate_definition(document)
        # Only a node type that has not landed yet may be missing; nothing else may be wrong.
        assert all(error.code == "unknown_type" for error in errors), (filename, errors)
        assert {e.node for e in errors} <= {n["id"] for n in document["nodes"] if n["type"] not in available}
    assert used >= EVERY_TYPE
