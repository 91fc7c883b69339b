"""Schemathesis against the live schema: generated requests to every operation, authenticated as a
user with real data; no answer may be a 5xx or break the documented response schema."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from accounts.services import api_token_create
from config.wsgi import application
from runs.services import run_start

pytestmark = pytest.mark.django_db(transaction=True)  # runs started by generated requests use threads

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "8"))
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def seeded(user, workflow, settings):
    """A workflow, a finished run, a trigger and a collection, so generated ids sometimes exist."""
    from providers.collections import collection_create
    from workflows.triggers import trigger_create

    rates = dict(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], user="100000/min", anon="100000/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    run_start(workflow=workflow, user=user, inputs={"text": "seed"}, mode="sync")
    trigger_create(workflow=workflow, user=user, kind="webhook")
    collection_create(workspace=workflow.workspace, user=user, name="Seeded")
    return api_token_create(user=user, name="schemathesis")[1]


def _exercise(operation, headers: dict[str, str], statuses: list[int]) -> str | None:
    """Run generated examples of one operation; the first failure's description, else None."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def check(case):
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        statuses.append(response.status_code)

    try:
        check()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # hypothesis raises schemathesis' failure groups
        return f"{operation.method.upper()} {operation.path}: {type(exc).__name__}: {str(exc)[:800]}"
    return None


def test_no_server_errors_and_no_schema_violations(seeded):
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", application)
    headers = {"Authorization": f"Token {seeded}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    statuses: list[int] = []
    failures = [failure for operation in operations if (failure := _exercise(operation, headers, statuses))]
    assert not failures, "\n\n".join(failures)
    # It really exercised the API: many requests, and a good share of them succeeded.
    assert len(statuses) > len(operations) * 2
    assert sum(200 <= code < 300 for code in statuses) > len(operations) // 2, sorted(set(statuses))
