"""Connections to outside databases named by a database credential (``postgres://…``, ``sqlite:///…``).

Used by the ``db_query`` node and the credential "Test". Never the application's own database,
unless a staff member marked the credential with ``extra["allow_app_database"]``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

POSTGRES_SCHEMES = ("postgres", "postgresql")


class ExternalDatabaseError(Exception):
    """The database URL is unusable or the connection failed; the message is safe to show."""


@dataclass
class ParsedDatabaseUrl:
    vendor: str  # "postgresql" | "sqlite"
    url: str
    path: Path | None = None  # sqlite only
    host: str = ""
    port: int | None = None
    name: str = ""


def parse_database_url(url: str) -> ParsedDatabaseUrl:
    """Validate a database URL. ``sqlite:////abs/path`` is absolute; ``sqlite:///rel`` is under DATA_DIR."""
    url = (url or "").strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in POSTGRES_SCHEMES:
        parsed = urllib.parse.urlsplit(url)
        name = parsed.path.lstrip("/")
        if not name:
            raise ExternalDatabaseError("The PostgreSQL URL names no database (postgres://user@host:5432/dbname).")
        try:
            port = parsed.port
        except ValueError as exc:
            raise ExternalDatabaseError("The PostgreSQL URL has an invalid port.") from exc
        return ParsedDatabaseUrl("postgresql", url, host=parsed.hostname or "localhost", port=port or 5432, name=name)
    if scheme == "sqlite":
        if not url.lower().startswith("sqlite:///"):
            raise ExternalDatabaseError("A SQLite URL looks like sqlite:////absolute/path.db or sqlite:///relative.db.")
        raw = urllib.parse.unquote(url[len("sqlite:///") :])
        if not raw or raw == ":memory:":
            raise ExternalDatabaseError("A SQLite URL must name a database file.")
        path = Path(raw) if raw.startswith("/") else Path(settings.DATA_DIR) / raw
        return ParsedDatabaseUrl("sqlite", url, path=path.resolve())
    raise ExternalDatabaseError("Unsupported database URL: use postgres://… or sqlite:///….")


def is_app_database(parsed: ParsedDatabaseUrl) -> bool:
    """Whether ``parsed`` points at the database Graphwright itself uses."""
    for alias_settings in settings.DATABASES.values():
        engine = alias_settings.get("ENGINE", "")
        name = str(alias_settings.get("NAME") or "")
        test_name = str((alias_settings.get("TEST") or {}).get("NAME") or "")
        if parsed.vendor == "sqlite" and engine.endswith("sqlite3") and parsed.path is not None:
            for candidate in (name, test_name):
                if candidate and not candidate.startswith(":memory:") and Path(candidate).resolve() == parsed.path:
                    return True
        if parsed.vendor == "postgresql" and engine.endswith("postgresql"):
            host = str(alias_settings.get("HOST") or "localhost")
            port = int(alias_settings.get("PORT") or 5432)
            local = {"localhost", "127.0.0.1", "::1", ""}
            same_host = host == parsed.host or (host in local and parsed.host in local)
            names = {name, test_name or f"test_{name}"}
            if same_host and port == parsed.port and parsed.name in names:
                return True
    return False


class ExternalDatabase:
    """One open connection with the few operations the node needs, the same for both vendors."""

    def __init__(self, parsed: ParsedDatabaseUrl, connection: Any):
        self.parsed = parsed
        self.vendor = parsed.vendor
        self.connection = connection
        self.placeholder = "%s" if parsed.vendor == "postgresql" else "?"

    def cancel(self) -> None:
        """Abort the statement in flight (safe to call from another thread)."""
        try:
            if self.vendor == "sqlite":
                self.connection.interrupt()
            elif hasattr(self.connection, "cancel_safe"):
                self.connection.cancel_safe(timeout=5)
            else:
                self.connection.cancel()
        except Exception:  # noqa: S110 -- cancelling a finished or closed connection is fine
            pass

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()

    def __enter__(self) -> ExternalDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(url: str, *, read_only: bool = False, connect_timeout: float = 10.0) -> ExternalDatabase:
    """Open a connection (not autocommit: the caller commits). Raises :class:`ExternalDatabaseError`."""
    parsed = parse_database_url(url)
    if parsed.vendor == "sqlite":
        assert parsed.path is not None
        if not parsed.path.exists():
            raise ExternalDatabaseError(f"The SQLite database file {parsed.path.name!r} does not exist.")
        mode = "ro" if read_only else "rw"
        uri = f"file:{urllib.parse.quote(str(parsed.path))}?mode={mode}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=connect_timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ExternalDatabaseError(f"Cannot open the SQLite database: {exc}") from exc
        return ExternalDatabase(parsed, conn)
    import psycopg

    try:
        conn = psycopg.connect(parsed.url, connect_timeout=max(1, int(connect_timeout)), autocommit=False)
    except psycopg.Error as exc:
        raise ExternalDatabaseError(f"Cannot connect to PostgreSQL: {_first_line(exc)}") from exc
    if read_only:
        conn.read_only = True
    return ExternalDatabase(parsed, conn)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
