"""The Redis channel layer as configured must keep a waiting consumer alive through quiet spells."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from channels_redis.core import RedisChannelLayer

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


def _configured_layer(tmp_path) -> dict:
    """CHANNEL_LAYERS as config/settings.py builds it when REDIS_URL is set."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"DATA_DIR": str(tmp_path), "REDIS_URL": REDIS_URL, "DJANGO_SETTINGS_MODULE": "config.settings"})
    code = "import django, json; django.setup(); from django.conf import settings; print(repr(settings.CHANNEL_LAYERS))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return eval(result.stdout)  # noqa: S307 - our own settings' repr, printed by our own subprocess


def test_a_receiver_survives_more_than_five_quiet_seconds(tmp_path):
    config = _configured_layer(tmp_path)["default"]
    assert config["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    layer = RedisChannelLayer(**{**config["CONFIG"], "prefix": f"gw-quiet-{os.getpid()}"})

    async def scenario():
        channel = await layer.new_channel()

        async def send_late():
            await asyncio.sleep(layer.brpop_timeout + 1.5)  # longer than one blocking pop
            await layer.send(channel, {"type": "run.event", "seq": 7})

        sender = asyncio.create_task(send_late())
        message = await asyncio.wait_for(layer.receive(channel), timeout=30)
        await sender
        await layer.flush()
        return message

    assert asyncio.run(scenario()) == {"type": "run.event", "seq": 7}
