"""API-wide pieces: the one error shape every endpoint answers with."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def _fields(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {
            key: _fields(value) if isinstance(value, dict) else [str(v) for v in _as_list(value)]
            for key, value in detail.items()
        }
    return {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_illegal_transition(exc: Exception) -> bool:
    from runs.choices import IllegalTransition

    return isinstance(exc, IllegalTransition)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Render every API error as ``{"error": {"code", "message", "fields"}}``."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif _is_illegal_transition(exc):
        exc = Conflict(detail=str(exc))
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        # An unexpected error: logged with its traceback, answered in the same shape without one.
        logger.error("Unhandled API error", exc_info=exc)
        return Response(
            {"error": {"code": "server_error", "message": "Internal server error.", "fields": {}}},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = (
            _fields(detail) if isinstance(detail, dict) else {"non_field_errors": [str(d) for d in _as_list(detail)]}
        )
        message = "Invalid input."
        code = "invalid"
    else:
        fields = {}
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        code = getattr(exc, "default_code", "error")
        if isinstance(exc, exceptions.APIException):
            codes = exc.get_codes()
            if isinstance(codes, str):
                code = codes
    response.data = {"error": {"code": code, "message": message, "fields": fields}}
    return response


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


class Gone(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This resource is not active."
    default_code = "inactive"


def canonical_hash(value: Any) -> str:
    """SHA-256 of the canonical JSON form of ``value`` (sorted keys, no whitespace)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def parse_bool(value: str | None) -> bool | None:
    """``?is_active=true`` style query values; ``None`` when absent, 400 when not a boolean."""
    if value is None or value == "":
        return None
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise exceptions.ValidationError({"filter": [f"Expected true or false, got {value!r}."]})


def parse_int(name: str, value: str | None, *, minimum: int = 0) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise exceptions.ValidationError({name: ["Expected an integer."]}) from None
    if number < minimum:
        raise exceptions.ValidationError({name: [f"Must be at least {minimum}."]})
    return number


class _SettingsRateThrottle(SimpleRateThrottle):
    """A scoped throttle whose rate comes from REST_FRAMEWORK's rates, with a default of its own."""

    default_rate = "60/min"

    def get_rate(self) -> str | None:
        rates = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_THROTTLE_RATES", {})
        return rates.get(self.scope, self.default_rate)

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class AuthTokenThrottle(_SettingsRateThrottle):
    """Password guessing at /api/v1/auth/token/: per client address."""

    scope = "auth"
    default_rate = "20/min"


class HookThrottle(_SettingsRateThrottle):
    """Webhooks are anonymous: per client address and per hook token."""

    scope = "hooks"
    default_rate = "120/min"

    def get_cache_key(self, request, view) -> str:
        token = (getattr(view, "kwargs", None) or {}).get("token", "")
        return self.cache_format % {"scope": self.scope, "ident": f"{self.get_ident(request)}:{token[:16]}"}


class ScopedQuerysetMixin:
    """``get_queryset`` is ``Model.objects.for_user(request.user)``: another user's object is a 404."""

    queryset_model: Any = None
    lookup_value_regex = r"[0-9]+"

    def scoped_queryset(self):
        return self.queryset_model.objects.for_user(self.request.user)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular introspection
            return self.queryset_model.objects.none()
        return self.scoped_queryset()


def require_action(request, workspace, action: str) -> None:
    """403 for an object the user can see but may not change (``accounts.permissions.require``)."""
    from accounts.permissions import require

    require(request.user, workspace, action)


def default_workspace(request, workspace=None, action: str = "edit"):
    """The workspace a new object goes to: the one given (must be visible, else 400), else the personal one."""
    from accounts.models import Workspace
    from accounts.services import personal_workspace

    if workspace is None:
        return personal_workspace(request.user)
    if not Workspace.objects.for_user(request.user).filter(pk=workspace.pk).exists():
        raise exceptions.ValidationError({"workspace": ["Unknown workspace."]})
    require_action(request, workspace, action)
    return workspace


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None
