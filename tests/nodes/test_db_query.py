"""db_query on real SQLite files and a scratch PostgreSQL database: bound values, modes, idempotency, cancel."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from dataclasses import dataclass

import pytest
from django.conf import settings as django_settings

from providers.choices import CredentialKind
from providers.credentials import credential_create
from workflows.nodes import NodeCancelled, NodeContext, NodeError, get_node_type

pytestmark = pytest.mark.django_db

INJECTIONS = [
    "x'); DROP TABLE people; --",
    "' OR '1'='1",
    "1; DELETE FROM people",
    'Robert"); DROP TABLE people;--',
]


def _pg_server_url() -> str:
    """The PostgreSQL server the tests may create a scratch database on (the app's own server when on PG)."""
    explicit = os.environ.get("GW_TEST_PG_URL")
    if explicit:
        return explicit.rstrip("/")
    app = os.environ.get("DATABASE_URL", "")
    if app.startswith(("postgres://", "postgresql://")):
        parts = urllib.parse.urlsplit(app)
        return urllib.parse.urlunsplit(parts._replace(path="")).rstrip("/")
    return "postgres://postgres@127.0.0.1:5432"


@pytest.fixture(scope="session")
def pg_target_url():
    psycopg = pytest.importorskip("psycopg")
    server = _pg_server_url()
    name = f"gw_vault_target_{os.getpid()}"
    try:
        admin = psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL server for db_query tests: {exc}")
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@dataclass
class Target:
    vendor: str
    url: str
    ph: str  # the placeholder

    def connect(self):
        if self.vendor == "sqlite":
            return sqlite3.connect(self.url.removeprefix("sqlite:///"))
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def sql(self, statement: str, params=()):
        conn = self.connect()
        try:
            cursor = conn.cursor()
            cursor.execute(statement, *([params] if params else []))
            rows = cursor.fetchall() if cursor.description else []
            conn.commit()
            return rows
        finally:
            conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path):
    if request.param == "sqlite":
        path = tmp_path / "target.sqlite3"
        t = Target("sqlite", f"sqlite:///{path}", "?")
        pk = "id INTEGER PRIMARY KEY AUTOINCREMENT"
    else:
        t = Target("postgresql", request.getfixturevalue("pg_target_url"), "%s")
        pk = "id SERIAL PRIMARY KEY"
        t.sql("DROP TABLE IF EXISTS people")
    t.sql(
        f"CREATE TABLE people ({pk}, name TEXT NOT NULL, email TEXT UNIQUE, run_key TEXT UNIQUE, "
        "joined DATE, score NUMERIC(6,2))"
    )
    t.sql(
        f"INSERT INTO people (name, email, joined, score) VALUES ({t.ph}, {t.ph}, {t.ph}, {t.ph})",
        ("Ada", "ada@example.com", "2024-01-02", "9.50"),
    )
    t.sql(f"INSERT INTO people (name, email) VALUES ({t.ph}, {t.ph})", ("Grace", "grace@example.com"))
    return t


@pytest.fixture
def cred(target, workspace, user):
    return credential_create(
        workspace=workspace, user=user, name="target", kind=CredentialKind.DATABASE, secret=target.url
    )


@pytest.fixture
def node():
    return get_node_type("db_query")


def make_ctx(config, workspace, **kwargs) -> NodeContext:
    kwargs.setdefault("context", {"inputs": {"name": "Ada", "evil": INJECTIONS[0]}})
    return NodeContext(node_id="q", node_type="db_query", config=config, workspace_id=workspace.pk, **kwargs)


def run(node, config, workspace, **kwargs):
    config = {"credential": "target", **config}
    assert node.validate_config(config) == []
    return node.execute(make_ctx(config, workspace, **kwargs))


def test_select_with_bound_params_and_row_cap(node, target, cred, workspace):
    out = run(
        node,
        {
            "sql": f"SELECT name, email, joined, score FROM people WHERE name = {target.ph}",
            "params": ["{{ inputs.name }}"],
        },
        workspace,
    )
    assert out["rows"] == [
        {
            "name": "Ada",
            "email": "ada@example.com",
            "joined": "2024-01-02",
            "score": "9.50" if target.vendor != "sqlite" else 9.5,
        }
    ]
    assert out["columns"] == ["name", "email", "joined", "score"] and out["truncated"] is False
    named = "%(who)s" if target.vendor == "postgresql" else ":who"
    out = run(node, {"sql": f"SELECT id FROM people WHERE name = {named}", "params": {"who": "Grace"}}, workspace)
    assert out["row_count"] == 1
    out = run(node, {"sql": "SELECT name FROM people ORDER BY id", "max_rows": 1}, workspace)
    assert out["rows"] == [{"name": "Ada"}] and out["truncated"] is True


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_reaches_the_database_only_as_a_value(node, target, cred, workspace, evil):
    out = run(
        node,
        {"sql": f"SELECT id FROM people WHERE name = {target.ph}", "params": ["{{ inputs.evil }}"]},
        workspace,
        context={"inputs": {"evil": evil}},
    )
    assert out["rows"] == []
    out = run(
        node,
        {"mode": "insert", "table": "people", "rows": {"name": "{{ inputs.evil }}", "email": "{{ inputs.evil }}"}},
        workspace,
        context={"inputs": {"evil": evil}},
    )
    assert out["inserted"] == 1
    assert target.sql("SELECT count(*) FROM people")[0][0] == 3
    assert target.sql(f"SELECT name FROM people WHERE email = {target.ph}", (evil,)) == [(evil,)]


def test_sql_is_never_templated(node, target, cred, workspace):
    config = {"credential": "target", "sql": "SELECT * FROM people WHERE name = '{{ inputs.evil }}'"}
    errors = node.validate_config(config)
    assert errors and errors[0].path == "config.sql" and "never templated" in errors[0].message
    with pytest.raises(NodeError, match="never templated"):
        node.execute(make_ctx(config, workspace))
    assert target.sql("SELECT count(*) FROM people")[0][0] == 2


def test_select_mode_is_read_only(node, target, cred, workspace):
    with pytest.raises(NodeError, match="Database error"):
        run(node, {"sql": "DELETE FROM people"}, workspace)
    assert target.sql("SELECT count(*) FROM people")[0][0] == 2


def test_execute_reports_rows_affected_and_returning(node, target, cred, workspace):
    out = run(node, {"mode": "execute", "sql": f"UPDATE people SET score = {target.ph}", "params": [1]}, workspace)
    assert out["rows_affected"] == 2 and out["rows"] == []
    out = run(
        node,
        {
            "mode": "execute",
            "sql": f"DELETE FROM people WHERE name = {target.ph} RETURNING id, name",
            "params": ["Grace"],
        },
        workspace,
    )
    assert out["rows_affected"] == 1 and [r["name"] for r in out["rows"]] == ["Grace"]
    assert target.sql("SELECT name FROM people") == [("Ada",)]


def test_insert_list_with_returning(node, target, cred, workspace):
    out = run(
        node,
        {
            "mode": "insert",
            "table": "people",
            "rows": [{"name": "Linus", "score": 1.5}, {"name": "Barbara", "joined": "2020-05-06"}],
            "returning": ["id", "name"],
        },
        workspace,
    )
    assert out["inserted"] == 2 and [r["name"] for r in out["rows"]] == ["Linus", "Barbara"]
    assert target.sql("SELECT count(*) FROM people")[0][0] == 4


@pytest.mark.parametrize(
    ("table", "rows"),
    [
        ("people; DROP TABLE people", {"name": "x"}),
        ('people"', {"name": "x"}),
        ("people", {"name) VALUES ('x'); DROP TABLE people; --": "x"}),
        ("a.b.c", {"name": "x"}),
    ],
)
def test_insert_identifiers_are_validated(node, target, cred, workspace, table, rows):
    config = {"credential": "target", "mode": "insert", "table": table, "rows": rows}
    with pytest.raises(NodeError, match="letters, digits and underscores"):
        node.execute(make_ctx(config, workspace))
    assert target.sql("SELECT count(*) FROM people")[0][0] == 2


def test_retried_insert_with_the_idempotency_key_writes_one_row(node, target, cred, workspace):
    config = {"mode": "insert", "table": "people", "rows": {"name": "Once"}, "idempotency_column": "run_key"}
    first = run(node, config, workspace, idempotency_key="run-7:q", attempt=1)
    again = run(node, config, workspace, idempotency_key="run-7:q", attempt=2)
    assert first == {**first, "inserted": 1, "skipped": 0}
    assert again["inserted"] == 0 and again["skipped"] == 1
    assert target.sql("SELECT name, run_key FROM people WHERE name = 'Once'") == [("Once", "run-7:q")]
    # a list gets one key per row, still stable across retries
    config["rows"] = [{"name": "L1"}, {"name": "L2"}]
    run(node, config, workspace, idempotency_key="run-8:q")
    out = run(node, config, workspace, idempotency_key="run-8:q")
    assert out["skipped"] == 2
    assert target.sql("SELECT count(*) FROM people WHERE name LIKE 'L%'")[0][0] == 2
    with pytest.raises(NodeError, match="needs the run's idempotency key"):
        run(node, config, workspace)


@pytest.mark.timeout(60)
def test_statement_timeout(node, target, cred, workspace):
    slow = (
        "SELECT pg_sleep(20)"
        if target.vendor == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    with pytest.raises(NodeError, match="timeout and was stopped") as excinfo:
        run(node, {"sql": slow, "timeout": 0.3}, workspace)
    assert excinfo.value.retryable is True


@pytest.mark.timeout(60)
def test_cancel_aborts_the_query(node, target, cred, workspace):
    slow = (
        "SELECT pg_sleep(30)"
        if target.vendor == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    ctx = make_ctx({"credential": "target", "sql": slow, "timeout": 600}, workspace)
    threading.Timer(0.5, ctx.cancel_event.set).start()
    with pytest.raises(NodeCancelled, match="cancelled"):
        get_node_type("db_query").execute(ctx)


@pytest.mark.timeout(60)
def test_deadline_ends_the_query(node, target, cred, workspace):
    slow = (
        "SELECT pg_sleep(30)"
        if target.vendor == "postgresql"
        else "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    )
    ctx = make_ctx({"credential": "target", "sql": slow, "timeout": 600}, workspace, deadline=time.monotonic() + 0.5)
    with pytest.raises((NodeCancelled, NodeError), match="timeout"):
        node.execute(ctx)


def test_secret_url_never_in_output_or_logs(node, target, workspace, user, caplog):
    caplog.set_level(logging.DEBUG)
    credential_create(workspace=workspace, user=user, name="target", kind=CredentialKind.DATABASE, secret=target.url)
    events = []
    ctx = make_ctx(
        {"credential": "target", "sql": "SELECT name FROM people"},
        workspace,
        emit_callback=lambda k, d: events.append(d),
    )
    output = get_node_type("db_query").execute(ctx)
    blob = json.dumps([output, ctx.logs, events])
    assert target.url not in blob and target.url not in caplog.text
    assert output["row_count"] == 2


def test_wrong_credential_kind_and_missing_file(node, workspace, user, tmp_path):
    credential_create(workspace=workspace, user=user, name="api", kind=CredentialKind.HTTP_BEARER, secret="t0k3n")
    credential_create(
        workspace=workspace,
        user=user,
        name="gone",
        kind=CredentialKind.DATABASE,
        secret=f"sqlite:///{tmp_path}/none.db",
    )
    with pytest.raises(NodeError, match="needs a Database URL"):
        node.execute(make_ctx({"credential": "api", "sql": "SELECT 1"}, workspace))
    with pytest.raises(NodeError, match="does not exist"):
        node.execute(make_ctx({"credential": "gone", "sql": "SELECT 1"}, workspace))
    assert not (tmp_path / "none.db").exists()  # never created by accident


def test_the_app_database_is_refused_unless_allowed(node, workspace, user):
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
        auth = db.get("USER") or "postgres"
        if db.get("PASSWORD"):
            auth += ":" + urllib.parse.quote(db["PASSWORD"])
        url = f"postgres://{auth}@{host}:{port}/{db['NAME']}"
    credential = credential_create(
        workspace=workspace, user=user, name="self", kind=CredentialKind.DATABASE, secret=url
    )
    with pytest.raises(NodeError, match="Graphwright's own database"):
        node.execute(make_ctx({"credential": "self", "sql": "SELECT 1 AS one"}, workspace))
    from django.core.exceptions import ValidationError

    from providers.credentials import credential_update

    with pytest.raises(ValidationError, match="Only an administrator"):
        credential_update(credential=credential, user=user, extra={"allow_app_database": True})
    user.is_staff = True
    user.save()
    credential_update(credential=credential, user=user, extra={"allow_app_database": True})
    assert node.execute(make_ctx({"credential": "self", "sql": "SELECT 1 AS one"}, workspace))["rows"] == [{"one": 1}]


def test_config_validation(node):
    assert node.validate_config({"credential": "x"})[0].path == "config.sql"
    assert node.validate_config({"credential": "x", "mode": "insert", "rows": {"a": 1}})[0].path == "config.table"
    assert node.validate_config({"credential": "x", "mode": "insert", "table": "bad-name", "rows": {"a": 1}})
    assert node.validate_config({"credential": "x", "sql": "SELECT 1", "idempotency_column": "k"})
    assert (
        node.validate_config({"credential": "x", "mode": "insert", "table": "s.t", "rows": "{{ inputs.rows }}"}) == []
    )
