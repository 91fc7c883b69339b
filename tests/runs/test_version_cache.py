"""The engine reads a pinned version's definition from a per-process cache: a version never
changes, and each run must get its own copy to work on."""

from __future__ import annotations

import pytest

from runs.engine import version_definition
from runs.services import run_start

from .conftest import tpl

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_cached_definition_is_the_stored_one_and_a_private_copy(make_workflow, user):
    workflow = make_workflow([tpl("a", "{{ inputs.n }}")])
    version = workflow.versions.get()
    first = version_definition(version.pk)
    assert first == version.definition
    first["nodes"][0]["config"]["template"] = "changed by a caller"
    assert version_definition(version.pk) == version.definition
    run = run_start(workflow=workflow, user=user, inputs={"n": 7}, mode="sync")
    assert run.status == "succeeded" and run.outputs == {"a": "7"}


def test_an_unknown_version_gives_an_empty_definition_and_a_failed_run_elsewhere(db):
    assert version_definition(987654321) == {}
