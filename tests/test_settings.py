"""Start-up configuration: bad values stop start-up with a message naming the variable."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(env_overrides: dict[str, str], tmp_path, code: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SIGNUP_ENABLED"}}
    env.update({"DATA_DIR": str(tmp_path), **env_overrides})
    code = "import django; django.setup(); from django.conf import settings; " + (
        code or "print(settings.DATABASES['default']['ENGINE'])"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("DATABASE_URL", "foo://nowhere"),
        ("REDIS_URL", "http://x"),
        ("LOG_LEVEL", "LOUD"),
        ("DEBUG", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("Q_WORKERS", "many"),
    ],
)
def test_bad_value_names_the_variable(var, value, tmp_path):
    result = _check({var: value}, tmp_path)
    assert result.returncode != 0
    assert f"Environment variable {var}=" in result.stderr


def test_defaults_are_sqlite_and_a_generated_secret_key(tmp_path):
    result = _check({}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.sqlite3"
    key = (tmp_path / "secret_key").read_text()
    assert len(key) > 40
    assert _check({}, tmp_path).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key  # kept, not regenerated


def test_database_url_switches_to_postgresql(tmp_path):
    result = _check({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/whatever"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "django.db.backends.postgresql"


def test_sqlite_runs_in_wal_mode_with_immediate_transactions(tmp_path):
    code = (
        "from django.db import connection; connection.ensure_connection(); "
        "print(connection.cursor().execute('PRAGMA journal_mode').fetchone()[0], "
        "settings.DATABASES['default']['OPTIONS']['transaction_mode'])"
    )
    result = _check({}, tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "IMMEDIATE"]


def test_redis_url_switches_broker_and_channel_layer(tmp_path):
    code = (
        "print(settings.Q_CLUSTER.get('redis'), 'orm' in settings.Q_CLUSTER, "
        "settings.CHANNEL_LAYERS['default']['BACKEND'])"
    )
    result = _check({"REDIS_URL": "redis://127.0.0.1:6379/3"}, tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://127.0.0.1:6379/3", "False", "channels_redis.core.RedisChannelLayer"]
    embedded = _check({}, tmp_path, code)
    assert embedded.stdout.split() == ["None", "True", "channels.layers.InMemoryChannelLayer"]


@pytest.mark.parametrize(("value", "expected"), [("false", "False"), ("0", "False"), ("true", "True"), ("", "True")])
def test_signup_switch(value, expected, tmp_path):
    result = _check({"SIGNUP_ENABLED": value}, tmp_path, "print(settings.SIGNUP_ENABLED)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_json_logs(tmp_path):
    code = "import logging, json; logging.getLogger('gw.test').warning('hello %s', 'there')"
    result = _check({"LOG_FORMAT": "json"}, tmp_path, code)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello there"
    assert line["level"].upper() == "WARNING"
