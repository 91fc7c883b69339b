"""Vault and outside-world figures: secret encryption, the SSRF guard's cost, an http_request round trip.

Keys: ``vault.encrypt_us`` / ``vault.decrypt_us`` (per secret), ``vault.ssrf_check_us`` (a literal
address), ``vault.http_request_ms_p50`` (the node on loopback, guard included) against
``vault.httpx_plain_ms_p50`` (a bare httpx client, same server), ``vault.sqlite_select_ms_p50``
(open, SELECT, close through the db_query connection helper).
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def run(results: dict[str, float]) -> None:
    import django

    django.setup()
    import httpx
    from django.conf import settings

    from providers import vault
    from providers.external_db import connect
    from providers.ssrf import resolve_checked
    from workflows.nodes import NodeContext, get_node_type

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.providers.loopback import start_server

    settings.ENCRYPTION_KEYS = [vault.generate_key()]
    secret = "sk-" + "x" * 48
    n = 2000
    started = time.perf_counter()
    tokens = [vault.encrypt(secret) for _ in range(n)]
    results["vault.encrypt_us"] = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for token, key_id in tokens:
        vault.decrypt(token, key_id)
    results["vault.decrypt_us"] = (time.perf_counter() - started) / n * 1e6

    settings.SSRF_ALLOWLIST = []
    started = time.perf_counter()
    for _ in range(n):
        resolve_checked("93.184.216.34", 443)
    results["vault.ssrf_check_us"] = (time.perf_counter() - started) / n * 1e6

    settings.SSRF_ALLOWLIST = ["127.0.0.1"]
    server = start_server()
    try:
        node = get_node_type("http_request")
        url = server.url("/json")
        guarded, plain = [], []
        with httpx.Client(trust_env=False) as client:
            for _ in range(60):
                t = time.perf_counter()
                node.execute(NodeContext(node_id="b", node_type="http_request", config={"url": url}))
                guarded.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                client.get(url).json()
                plain.append((time.perf_counter() - t) * 1000)
        results["vault.http_request_ms_p50"] = _p50(guarded[10:])
        results["vault.httpx_plain_ms_p50"] = _p50(plain[10:])
    finally:
        server.stop()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", [(str(i),) for i in range(1000)])
        samples = []
        for _ in range(200):
            t = time.perf_counter()
            with connect(f"sqlite:///{path}", read_only=True) as db:
                db.connection.execute("SELECT id, v FROM t WHERE id < ?", (100,)).fetchall()
            samples.append((time.perf_counter() - t) * 1000)
        results["vault.sqlite_select_ms_p50"] = _p50(samples[20:])
