"""``db_query``: parameterised SQL against a database credential (PostgreSQL or SQLite).

The SQL text is fixed in the workflow and never templated; templates fill ``params`` only, and
those always travel as bound parameters. Placeholders are the database's own: ``%s`` /
``%(name)s`` for PostgreSQL (write a literal ``%`` as ``%%``), ``?`` / ``:name`` for SQLite.
The ``insert`` mode builds the statement itself from validated, quoted identifiers.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import re
import time
import uuid
from typing import Any

from providers.choices import CredentialKind
from providers.credentials import CredentialNotFound, credential_mark_used, credential_resolve, credential_secret
from providers.external_db import ExternalDatabase, ExternalDatabaseError, connect, is_app_database, parse_database_url
from providers.vault import VaultError

from . import register
from ._watch import watch_cancel
from .base import ConfigError, NodeCancelled, NodeContext, NodeError, NodeType

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DEFAULT_MAX_ROWS = 1000
HARD_MAX_ROWS = 100_000


def quote_identifier(name: str, field: str = "identifier") -> str:
    """``"name"`` or ``"schema"."name"`` after checking each part against a strict pattern."""
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(IDENTIFIER.match(part) for part in parts):
        raise NodeError(
            f"Invalid {field} {name!r}: use letters, digits and underscores (optionally schema.table).",
            retryable=False,
        )
    return ".".join(f'"{part}"' for part in parts)


def jsonable(value: Any) -> Any:
    """Database values as JSON: dates as ISO text, decimals and UUIDs as text, bytes as base64."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def _rows(cursor: Any, limit: int | None = None) -> tuple[list[str], list[dict[str, Any]], bool]:
    if cursor.description is None:
        return [], [], False
    columns = [col[0] for col in cursor.description]
    fetched = cursor.fetchmany(limit + 1) if limit is not None else cursor.fetchall()
    truncated = limit is not None and len(fetched) > limit
    if truncated:
        fetched = fetched[:limit]
    return columns, [dict(zip(columns, map(jsonable, row), strict=True)) for row in fetched], truncated


@register
class DbQueryNode(NodeType):
    name = "db_query"
    label = "Database query"
    description = "Run parameterised SQL on a PostgreSQL or SQLite database credential."
    category = "io"
    icon = "⛁"
    side_effects = True
    config_schema = {
        "type": "object",
        "required": ["credential"],
        "additionalProperties": False,
        "properties": {
            "credential": {"type": ["string", "integer"], "description": "Database credential name or id."},
            "mode": {"enum": ["select", "execute", "insert"], "default": "select"},
            "sql": {"type": "string", "description": "Fixed SQL with placeholders; never templated."},
            "params": {"type": ["array", "object", "string"], "description": "Bound values; templates allowed."},
            "table": {"type": "string", "description": "insert: the table (schema.table allowed)."},
            "rows": {"type": ["object", "array", "string"], "description": "insert: a dict or list of dicts."},
            "returning": {"type": "array", "items": {"type": "string"}, "description": "insert: columns to return."},
            "idempotency_column": {
                "type": "string",
                "description": "insert: a UNIQUE column that receives the run's idempotency key.",
            },
            "max_rows": {"type": "integer", "minimum": 1, "maximum": HARD_MAX_ROWS, "default": DEFAULT_MAX_ROWS},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600, "default": 30},
        },
    }

    def clean_config(self, config: dict[str, Any]) -> list[ConfigError]:
        errors: list[ConfigError] = []
        mode = config.get("mode", "select")
        sql = config.get("sql", "")
        if "{{" in sql or "{%" in sql:
            errors.append(
                ConfigError(
                    "config.sql",
                    "SQL is never templated: use placeholders in the SQL and put the templated values in params.",
                )
            )
        if mode in ("select", "execute") and not sql.strip():
            errors.append(ConfigError("config.sql", f"The {mode} mode needs SQL."))
        if mode == "insert":
            if not config.get("table"):
                errors.append(ConfigError("config.table", "The insert mode needs a table."))
            elif not _valid_name(config["table"]):
                errors.append(
                    ConfigError("config.table", "Use letters, digits and underscores (optionally schema.table).")
                )
            if config.get("rows") in (None, "", [], {}):
                errors.append(ConfigError("config.rows", "The insert mode needs a row (object) or rows (list)."))
            for index, column in enumerate(config.get("returning") or []):
                if not IDENTIFIER.match(column):
                    errors.append(ConfigError(f"config.returning.{index}", f"Invalid column name {column!r}."))
        elif config.get("table") or config.get("rows") or config.get("returning"):
            errors.append(ConfigError("config.mode", "table, rows and returning are for the insert mode."))
        column = config.get("idempotency_column")
        if column is not None:
            if mode != "insert":
                errors.append(
                    ConfigError("config.idempotency_column", "Only the insert mode writes the idempotency key.")
                )
            elif not IDENTIFIER.match(column):
                errors.append(ConfigError("config.idempotency_column", f"Invalid column name {column!r}."))
        return errors

    def execute(self, ctx: NodeContext) -> dict[str, Any]:
        config = ctx.config
        problems = self.clean_config(config)
        if problems:
            raise NodeError("; ".join(map(str, problems)), retryable=False)
        ctx.check_cancelled()
        mode = config.get("mode", "select")
        try:
            credential = credential_resolve(
                workspace_id=ctx.workspace_id, ref=config["credential"], kinds=(CredentialKind.DATABASE,)
            )
            url = credential_secret(credential)
            parsed = parse_database_url(url)
        except CredentialNotFound as exc:
            raise NodeError(str(exc), retryable=False) from exc
        except VaultError as exc:
            raise NodeError(f"Credential {config['credential']!r} cannot be read: {exc}", retryable=False) from exc
        except ExternalDatabaseError as exc:
            raise NodeError(f"Credential {credential.name!r}: {exc}", retryable=False) from exc
        if is_app_database(parsed) and not credential.extra.get("allow_app_database"):
            raise NodeError(
                f"Credential {credential.name!r} points at Graphwright's own database, which workflows may not "
                "query unless an administrator allows it on the credential.",
                retryable=False,
            )
        credential_mark_used(credential=credential, run_id=ctx.run_id, node_id=ctx.node_id)

        timeout = float(config.get("timeout") or 30)
        left = ctx.time_left()
        if left is not None:
            if left <= 0:
                raise NodeCancelled("timeout")
            timeout = min(timeout, left)
        try:
            db = connect(url, read_only=mode == "select", connect_timeout=min(timeout, 10))
        except ExternalDatabaseError as exc:
            raise NodeError(f"Credential {credential.name!r}: {exc}") from exc
        started = time.monotonic()
        try:
            with watch_cancel(ctx, db.cancel) as watch:
                try:
                    _apply_timeout(db, timeout)
                    if mode == "select":
                        output = _select(db, config, ctx)
                    elif mode == "execute":
                        output = _execute(db, config, ctx)
                    else:
                        output = _insert(db, config, ctx)
                    db.connection.commit()
                except NodeError:
                    _rollback(db)
                    raise
                except Exception as exc:
                    _rollback(db)
                    if watch.fired:
                        raise NodeCancelled(watch.reason) from exc
                    raise _db_error(db, exc, timeout) from exc
        finally:
            db.close()
        output["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        ctx.log(f"db_query {mode} on {credential.name}: {_summary(output)}")
        return output


# -- modes -----------------------------------------------------------------------------------------
def _params(ctx: NodeContext, config: dict[str, Any]) -> list[Any] | dict[str, Any] | None:
    raw = config.get("params")
    if raw in (None, "", [], {}):
        return None
    value = ctx.render(raw)
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list | dict):
        raise NodeError("params must render to a list or an object of values.", retryable=False)
    return value if isinstance(value, dict) else [_bindable(v) for v in value]


def _bindable(value: Any) -> Any:
    """Structured values bind as JSON text; everything else binds as itself."""
    import json

    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


def _select(db: ExternalDatabase, config: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    params = _params(ctx, config)
    if isinstance(params, dict):
        params = {k: _bindable(v) for k, v in params.items()}
    limit = int(config.get("max_rows") or DEFAULT_MAX_ROWS)
    cursor = db.connection.cursor()
    cursor.execute(config["sql"], params) if params is not None else cursor.execute(config["sql"])
    columns, rows, truncated = _rows(cursor, limit)
    return {"rows": rows, "row_count": len(rows), "columns": columns, "truncated": truncated}


def _execute(db: ExternalDatabase, config: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    params = _params(ctx, config)
    if isinstance(params, dict):
        params = {k: _bindable(v) for k, v in params.items()}
    cursor = db.connection.cursor()
    cursor.execute(config["sql"], params) if params is not None else cursor.execute(config["sql"])
    columns, rows, truncated = _rows(cursor, int(config.get("max_rows") or DEFAULT_MAX_ROWS))
    affected = cursor.rowcount if cursor.rowcount is not None and cursor.rowcount >= 0 else len(rows)
    return {"rows_affected": affected, "rows": rows, "columns": columns, "truncated": truncated}


def _insert(db: ExternalDatabase, config: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    table = quote_identifier(config["table"], "table")
    value = ctx.render(config["rows"])
    if isinstance(value, dict):
        rows, single = [value], True
    elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        rows, single = value, False
    else:
        raise NodeError("rows must render to an object or a non-empty list of objects.", retryable=False)
    key_column = config.get("idempotency_column")
    if key_column and not ctx.idempotency_key:
        raise NodeError(
            "idempotency_column needs the run's idempotency key, and this attempt has none.", retryable=False
        )
    returning = [quote_identifier(c, "column") for c in config.get("returning") or []]
    cursor = db.connection.cursor()
    inserted, skipped, returned = 0, 0, []
    for index, row in enumerate(rows):
        values = dict(row)
        if key_column:
            values[key_column] = ctx.idempotency_key if single else f"{ctx.idempotency_key}:{index}"
        if not values:
            raise NodeError(f"Row {index} has no columns.", retryable=False)
        columns = [quote_identifier(str(c), "column") for c in values]
        placeholders = ", ".join([db.placeholder] * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608 -- identifiers quoted
        if key_column:
            sql += f" ON CONFLICT ({quote_identifier(key_column, 'column')}) DO NOTHING"
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        cursor.execute(sql, [_bindable(v) for v in values.values()])
        if returning:
            _, got, _ = _rows(cursor)
            returned.extend(got)
            count = len(got)
        else:
            count = max(cursor.rowcount, 0)
        inserted += count
        skipped += 1 - count if count <= 1 else 0
    output: dict[str, Any] = {"inserted": inserted, "skipped": skipped}
    if returning:
        output["rows"] = returned
    return output


# -- plumbing ------------------------------------------------------------------------------------------
def _valid_name(name: Any) -> bool:
    parts = name.split(".") if isinstance(name, str) else []
    return 1 <= len(parts) <= 2 and all(IDENTIFIER.match(p) for p in parts)


def _apply_timeout(db: ExternalDatabase, seconds: float) -> None:
    if db.vendor == "postgresql":
        db.connection.execute("SELECT set_config('statement_timeout', %s, false)", [str(max(1, int(seconds * 1000)))])
        return
    deadline = time.monotonic() + seconds
    # The handler runs every N SQLite VM instructions; a non-zero return interrupts the statement.
    db.connection.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)


def _rollback(db: ExternalDatabase) -> None:
    with contextlib.suppress(Exception):  # the connection may already be broken; it is closed next
        db.connection.rollback()


def _db_error(db: ExternalDatabase, exc: Exception, timeout: float) -> NodeError:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if db.vendor == "sqlite":
        import sqlite3

        if isinstance(exc, sqlite3.OperationalError) and "interrupted" in message:
            return NodeError(f"The statement ran past its {timeout:g} s timeout and was stopped.")
        if isinstance(exc, sqlite3.OperationalError) and "locked" in message:
            return NodeError(f"Database error: {message}")
        return NodeError(f"Database error: {message}", retryable=False)
    import psycopg

    if isinstance(exc, psycopg.errors.QueryCanceled):
        return NodeError(f"The statement ran past its {timeout:g} s timeout and was stopped.")
    if isinstance(exc, psycopg.OperationalError):
        return NodeError(f"Database error: {message}")
    return NodeError(f"Database error: {message}", retryable=False)


def _summary(output: dict[str, Any]) -> str:
    if "row_count" in output:
        return f"{output['row_count']} rows" + (" (truncated)" if output.get("truncated") else "")
    if "inserted" in output:
        return f"{output['inserted']} inserted, {output['skipped']} skipped"
    return f"{output.get('rows_affected', 0)} rows affected"
