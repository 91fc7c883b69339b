"""Start-up configuration: bad values stop start-up with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _check(env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update({"DATA_DIR": str(tmp_path), **env_overrides})
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default']['ENGINE'])"
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
