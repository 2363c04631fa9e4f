"""Bearer-token authentication and scope checks for the ``/v1`` routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from penin.api.problems import Problem
from penin.keys import ApiKey, KeyRing, Scope

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penin"'}


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None

    return token.strip()


def require(scope: Scope) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that admits a request only with a live key of ``scope``."""

    async def check(request: Request) -> ApiKey:
        token = _token(request)
        if token is None:
            raise Problem(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <API key>'",
                _CHALLENGE,
            )
        keyring: KeyRing = request.app.state.node.keyring
        key = keyring.authenticate(token)
        if key is None:
            raise Problem(
                401, "unauthorized", "the API key is unknown or revoked", _CHALLENGE
            )
        if not key.allows(scope):
            raise Problem(
                403,
                "forbidden",
                f"this route needs scope '{scope.value}', "
                f"the key has '{key.scope.value}'",
            )
        request.state.key_id = key.key_id

        return key

    return check
