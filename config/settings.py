"""Graphwright settings, read from the environment through django-environ.

With no environment at all the project runs embedded: SQLite in WAL mode under ``data/``,
the django-q2 ORM broker, the in-process channel layer and the local models.
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis without a code change.
A bad value stops start-up with a message that names the variable.
"""

from __future__ import annotations

import logging
import secrets
import sys
import urllib.parse
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _bad(var: str, value: object, why: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"Environment variable {var}={value!r} is invalid: {why}")


def _get(var: str, cast, default):
    try:
        return env(var, cast=cast, default=default)
    except (ValueError, TypeError) as exc:
        raise _bad(var, env.str(var, default=""), str(exc)) from exc


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(var: str, default: bool) -> bool:
    raw = env.str(var, default="")
    if raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise _bad(var, raw, "expected true or false")


DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _persistent_secret(var: str, filename: str, make) -> str:
    """Return ``var`` from the environment, else a value generated once and kept in ``data/``."""
    value = env.str(var, default="")
    if value:
        return value
    path = DATA_DIR / filename
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _persistent_secret("SECRET_KEY", "secret_key", lambda: secrets.token_urlsafe(50))
DEBUG = _bool("DEBUG", False)
ALLOWED_HOSTS = _get("ALLOWED_HOSTS", list, ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = _get("CSRF_TRUSTED_ORIGINS", list, [])
CORS_ALLOWED_ORIGINS = _get("CORS_ALLOWED_ORIGINS", list, [])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "corsheaders",
    "channels",
    "django_q",
    "accounts",
    "workflows",
    "runs",
    "providers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "accounts.middleware.CurrentWorkspaceMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.workspaces",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
SQLITE_PATH = DATA_DIR / "graphwright.sqlite3"
_database_url = env.str("DATABASE_URL", default="")
if _database_url:
    try:
        _db = env.db_url_config(_database_url)
    except Exception as exc:  # django-environ raises several types for a bad URL
        raise _bad("DATABASE_URL", _database_url, str(exc)) from exc
    if _db.get("ENGINE") not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise _bad("DATABASE_URL", _database_url, "unknown scheme (use postgres://… or sqlite:///…)")
    if _db["ENGINE"] == "django.db.backends.postgresql" and not _db.get("NAME"):
        raise _bad("DATABASE_URL", _database_url, "no database name")
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(SQLITE_PATH)}

if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers work while a writer commits; IMMEDIATE takes the write lock at BEGIN so
    # two processes never deadlock upgrading a read lock; the timeout waits for the lock instead of
    # failing with "database is locked".
    _db.setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        }
    )
    _db["TEST"] = {"NAME": str(DATA_DIR / "test_graphwright.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # A q-cluster worker executes one task after another in the same process: keep its connection
    # (django-q2 calls close_old_connections around each task) instead of reconnecting per run.
    _db.setdefault("CONN_MAX_AGE", _get("CONN_MAX_AGE", int, 300 if "qcluster" in sys.argv else 0))
    _db.setdefault("CONN_HEALTH_CHECKS", True)

DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
IS_SQLITE = _db["ENGINE"] == "django.db.backends.sqlite3"

# --- Redis: django-q2 broker and Channels layer -------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    _parsed = urllib.parse.urlparse(REDIS_URL)
    if _parsed.scheme not in {"redis", "rediss", "unix"} or not (_parsed.hostname or _parsed.path):
        raise _bad("REDIS_URL", REDIS_URL, "expected redis://host:port/db")

Q_WORKERS = _get("Q_WORKERS", int, 2)
Q_TIMEOUT = _get("Q_TIMEOUT", int, 3600)  # the longest a run may hold a worker
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="graphwright"),
    "workers": Q_WORKERS,
    "timeout": Q_TIMEOUT,
    # django-q2 requires retry > timeout, or a task still running would be delivered again.
    "retry": Q_TIMEOUT + 60,
    "max_attempts": 1,  # the engine's own lease + reaper handle redelivery and bounds attempts
    "ack_failures": True,
    "save_limit": 500,
    "catch_up": False,
    "poll": 0.2,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A consumer waits for messages with BZPOPMIN for 5 s at a time; redis-py's default 5 s
                # socket timeout would race it and drop every WebSocket after 5 quiet seconds.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "prefix": env.str("CHANNELS_PREFIX", default="graphwright"),
            },
        }
    }
else:
    # In-process only: the WebSocket consumer also tails the RunEvent table, so events written by a
    # worker process still reach clients on the embedded default.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Auth ------------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"
SIGNUP_ENABLED = _bool("SIGNUP_ENABLED", True)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media")))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = _get("DATA_UPLOAD_MAX_MEMORY_SIZE", int, 10 * 1024 * 1024)

# --- API -------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="60/min"),
        "user": env.str("THROTTLE_USER", default="1200/min"),
        "auth": env.str("THROTTLE_AUTH", default="20/min"),
        "hooks": env.str("THROTTLE_HOOKS", default="120/min"),
    },
    "EXCEPTION_HANDLER": "config.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Graphwright API",
    "DESCRIPTION": "Build, run and watch AI workflows.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "runs.choices.RunStatus",
        "NodeRunStatusEnum": "runs.choices.NodeRunStatus",
        "TriggerKindEnum": "workflows.choices.TriggerKind",
        "CredentialKindEnum": "providers.choices.CredentialKind",
    },
}

# --- Graphwright -----------------------------------------------------------------------------
GW_MAX_PARALLEL_NODES = _get("GW_MAX_PARALLEL_NODES", int, 8)  # concurrent branches in one run
GW_OUTPUT_MAX_BYTES = _get("GW_OUTPUT_MAX_BYTES", int, 256 * 1024)  # larger outputs become artifacts
GW_LEASE_SECONDS = _get("GW_LEASE_SECONDS", int, 30)
GW_HEARTBEAT_SECONDS = _get("GW_HEARTBEAT_SECONDS", int, 5)
GW_MAX_RUN_ATTEMPTS = _get("GW_MAX_RUN_ATTEMPTS", int, 3)
GW_RUN_TIMEOUT = _get("GW_RUN_TIMEOUT", int, 3600)
GW_REAPER_MINUTES = _get("GW_REAPER_MINUTES", int, 1)
GW_BATCH_MAX_RUNS = _get("GW_BATCH_MAX_RUNS", int, 1000)  # runs one batch start may create
GW_RUN_CHUNK = _get("GW_RUN_CHUNK", int, 25)  # runs of a batch one worker task executes together
GW_DEFAULT_MAX_CONCURRENT_RUNS = _get("GW_DEFAULT_MAX_CONCURRENT_RUNS", int, 0)  # 0 = unlimited
SSRF_ALLOWLIST = _get("SSRF_ALLOWLIST", list, [])
ENCRYPTION_KEYS = _get("ENCRYPTION_KEYS", list, [])
LOCAL_LLM_DEVICE = env.str("LOCAL_LLM_DEVICE", default="auto")

# --- Logging ---------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise _bad("LOG_LEVEL", LOG_LEVEL, "use DEBUG, INFO, WARNING, ERROR or CRITICAL")
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise _bad("LOG_FORMAT", LOG_FORMAT, "use text or json")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
