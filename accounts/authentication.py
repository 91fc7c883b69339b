from __future__ import annotations

from django.core.cache import cache
from rest_framework import authentication, exceptions

from .services import api_token_authenticate


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token gw_…`` against hashed :class:`accounts.models.ApiToken` rows."""

    keyword = "Token"

    def authenticate_credentials(self, key: str):
        token = api_token_authenticate(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        _audit_token_use(token)
        return (token.user, token)


def _audit_token_use(token) -> None:
    # At most one entry a minute per token: cache.add only succeeds when the key is absent.
    if cache.add(f"gw:token-used:{token.pk}", 1, timeout=60):
        from .audit import audit

        audit(action="token.used", actor=token.user, target=token, data={"prefix": token.key_prefix})
