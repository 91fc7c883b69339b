"""Event latency: from the commit of a RunEvent to a connected WebSocket client receiving it.

The client is a Channels ``WebsocketCommunicator`` connected to ``config.asgi.application`` (the
same consumer, auth and routing daphne serves), subscribed to one run. A writer thread emits events
the way the engine does (``runs.events.emit``: numbered row, pushed to the run's group after
commit); the commit instant is stamped by an ``on_commit`` hook registered before the push.

Keys: ``events.inmemory.latency_ms_p50/p95`` (in-process layer) and ``events.redis.latency_ms_p50/p95``
(channels-redis; skipped when Redis is unreachable). Runs against a throwaway test database.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

EVENTS = int(os.environ.get("BENCH_EVENTS", "300"))
GAP_SECONDS = 0.004


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _fixture() -> tuple[int, str]:
    from accounts.services import api_token_create, personal_workspace, user_create
    from runs.models import Run
    from workflows.services import workflow_create, workflow_publish

    user = user_create(username=f"bench-{time.time_ns()}", password="bench password 123")
    definition = {
        "format": "graphwright/v1",
        "name": "Bench events",
        "nodes": [{"id": "t", "type": "template", "config": {"template": "x"}}],
        "edges": [],
    }
    workflow = workflow_create(
        workspace=personal_workspace(user), user=user, name="Bench events", definition=definition
    )
    version = workflow_publish(workflow=workflow, user=user)
    run = Run.objects.create(workspace=workflow.workspace, workflow=workflow, version=version, created_by=user)
    return run.pk, api_token_create(user=user, name="bench")[1]


async def _measure(run_id: int, token: str) -> list[float]:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.db import transaction

    from config.asgi import application
    from runs.events import emit

    stamps: dict[int, float] = {}

    def write_stamped(index: int) -> None:
        with transaction.atomic():
            holder: dict[str, int] = {}
            # Registered before emit's push hook, so it runs first: the stamp is the commit instant.
            transaction.on_commit(lambda: stamps.__setitem__(holder["seq"], time.perf_counter()))
            holder["seq"] = emit(run_id, "bench.tick", {"i": index}).seq

    communicator = WebsocketCommunicator(
        application,
        f"/ws/runs/{run_id}/?after=0",
        headers=[
            (b"origin", b"http://127.0.0.1"),
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Token {token}".encode()),
        ],
    )
    connected, _ = await communicator.connect()
    if not connected:
        raise RuntimeError("the WebSocket connection was refused")
    latencies: list[float] = []
    writer = sync_to_async(write_stamped, thread_sensitive=True)
    try:
        for index in range(EVENTS):
            await writer(index)
            message = await communicator.receive_json_from(timeout=10)
            received = time.perf_counter()
            latencies.append((received - stamps[message["seq"]]) * 1000)
            await asyncio.sleep(GAP_SECONDS)
    finally:
        await communicator.disconnect()
    return latencies


def _layer(name: str, config: dict, results: dict[str, float], run_id: int, token: str) -> None:
    from channels.layers import channel_layers
    from django.conf import settings

    settings.CHANNEL_LAYERS = {"default": config}
    channel_layers.backends.clear()
    latencies = asyncio.run(_measure(run_id, token))
    channel_layers.backends.clear()
    results[f"events.{name}.latency_ms_p50"] = statistics.median(latencies)
    results[f"events.{name}.latency_ms_p95"] = _percentile(latencies, 0.95)
    print(f"   {name}: {len(latencies)} events, p50 {statistics.median(latencies):.2f} ms, "
          f"p95 {_percentile(latencies, 0.95):.2f} ms")  # fmt: skip


def _redis_url() -> str | None:
    import redis
    from django.conf import settings

    url = os.environ.get("BENCH_REDIS_URL") or settings.REDIS_URL or "redis://127.0.0.1:6379/14"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        print(f"   redis: skipped ({type(exc).__name__}: {exc})")
        return None
    return url


def run(results: dict[str, float]) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    original_layers = settings.CHANNEL_LAYERS
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        run_id, token = _fixture()
        _layer("inmemory", {"BACKEND": "channels.layers.InMemoryChannelLayer"}, results, run_id, token)
        url = _redis_url()
        if url:
            config = {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": f"gw-bench-{os.getpid()}"},
            }
            run_id, token = _fixture()
            _layer("redis", config, results, run_id, token)
    finally:
        settings.CHANNEL_LAYERS = original_layers
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        connection.creation.destroy_test_db(old_name, verbosity=0)
