from __future__ import annotations

from rest_framework import authentication, exceptions

from .services import api_token_authenticate


class ApiTokenAuthentication(authentication.TokenAuthentication):
    """``Authorization: Token gw_…`` against hashed :class:`accounts.models.ApiToken` rows."""

    keyword = "Token"

    def authenticate_credentials(self, key: str):
        token = api_token_authenticate(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        return (token.user, token)
