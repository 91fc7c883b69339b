"""Request middleware: the current workspace for pages, token auth for WebSockets."""

from __future__ import annotations

from contextvars import ContextVar
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.utils.functional import SimpleLazyObject

from .models import Workspace

SESSION_KEY = "workspace_id"

# The client address of the request being handled, so the audit log can note it without every
# service taking a request argument. None outside a request (tasks, commands).
current_ip: ContextVar[str | None] = ContextVar("current_ip", default=None)


def client_ip(request) -> str | None:
    """REMOTE_ADDR; behind a proxy, configure it to set REMOTE_ADDR (X-Forwarded-For is not trusted)."""
    address = (request.META.get("REMOTE_ADDR") or "").strip()
    return address or None


def current_workspace(request) -> Workspace | None:
    user = request.user
    if not user.is_authenticated:
        return None
    from .services import personal_workspace

    workspace_id = request.session.get(SESSION_KEY)
    if workspace_id:
        workspace = Workspace.objects.for_user(user).filter(pk=workspace_id).first()
        if workspace is not None:
            return workspace
    return personal_workspace(user)


class CurrentWorkspaceMiddleware:
    """Sets ``request.workspace``: the one chosen in the switcher, else the personal workspace.

    Also notes the client address for the audit log (``current_ip``)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.workspace = SimpleLazyObject(lambda: current_workspace(request))
        token = current_ip.set(client_ip(request))
        try:
            return self.get_response(request)
        finally:
            current_ip.reset(token)


@database_sync_to_async
def _user_for_token(key: str):
    from .services import api_token_authenticate

    token = api_token_authenticate(key)
    return token.user if token else None


class TokenAuthMiddleware:
    """WebSocket auth: ``?token=gw_…`` or an ``Authorization: Token gw_…`` header, else the session."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        key = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Token "):
                key = value[6:].decode().strip()
        if not key:
            key = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [""])[0]
        if key:
            user = await _user_for_token(key)
            if user is not None:
                scope = dict(scope, user=user)
        return await self.inner(scope, receive, send)


def TokenAuthMiddlewareStack(inner):
    # Session auth runs first and sets scope["user"]; a valid token then takes precedence.
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))
