"""Liveness and readiness probes.

``/health/``: the process answers. ``/ready/``: the database, the task broker and the channel layer
are reachable; 503 with the failing check named otherwise.
"""

from __future__ import annotations

import logging
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import JsonResponse

logger = logging.getLogger(__name__)


def health(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_broker() -> None:
    if settings.Q_CLUSTER.get("redis"):
        import redis

        client = redis.Redis.from_url(settings.Q_CLUSTER["redis"], socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    else:  # the ORM broker lives in the database
        from django_q.models import OrmQ

        OrmQ.objects.exists()


async def _layer_roundtrip() -> None:
    import asyncio

    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("ready.")
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "ready.ping", "token": token})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2)
    if message.get("token") != token:
        raise RuntimeError("the channel layer returned another message")


def _check_channel_layer() -> None:
    async_to_sync(_layer_roundtrip)()


CHECKS = {"database": _check_database, "broker": _check_broker, "channel_layer": _check_channel_layer}


def ready(request):
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:
            logger.warning("Readiness check %s failed: %s", name, exc)
            results[name] = f"error: {type(exc).__name__}"
    ok = all(value == "ok" for value in results.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": results}, status=200 if ok else 503)
