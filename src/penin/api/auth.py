"""Bearer-token authentication, scope checks and admin-action policy checks.

Most ``/v1`` routes need a key of one scope (``require``). Administrative
actions ask the ``penin/admin/decision`` policy instead (``admit``), so an
operator can grant one to another scope by policy; each decision is a
``policy.decision`` ledger record, durable before the action is taken.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from penin.api.problems import Problem, policy_problem
from penin.keys import ApiKey, KeyRing, Scope
from penin.router.errors import UNAVAILABLE_REASONS

ADMIN_PATH = "penin/admin/decision"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penin"'}


def check_token(keyring: KeyRing, authorization: str | None) -> ApiKey:
    """The live key an Authorization header value names, of any scope; 401 if none."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <API key>'",
            _CHALLENGE,
        )
    key = keyring.authenticate(token)
    if key is None:
        raise Problem(
            401, "unauthorized", "the API key is unknown or revoked", _CHALLENGE
        )

    return key


def wrong_scope(needed: Scope, key: ApiKey) -> Problem:
    return Problem(
        403,
        "forbidden",
        f"this route needs scope '{needed.value}', the key has '{key.scope.value}'",
    )


async def authenticate(request: Request) -> ApiKey:
    """The live key the request carries, of any scope; 401 if none."""
    keyring: KeyRing = request.app.state.node.keyring
    key = check_token(keyring, request.headers.get("authorization"))
    request.state.key_id = key.key_id

    return key


def require(scope: Scope) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that admits a request only with a live key of ``scope``."""

    async def check(request: Request) -> ApiKey:
        key = await authenticate(request)
        if not key.allows(scope):
            raise wrong_scope(scope, key)

        return key

    return check


def admit(action: str) -> Callable[[Request], Awaitable[ApiKey]]:
    """A dependency that admits a live key the admin policy lets do ``action``.

    A refusal by the policy is 403 ``forbidden`` with its reasons; a policy
    that could not decide is 403 ``policy-denied``, or 503
    ``policy-unavailable`` when a remote engine did not answer.
    """

    async def check(request: Request) -> ApiKey:
        key = await authenticate(request)
        node = request.app.state.node
        input = {"key": {"id": key.key_id, "scope": key.scope.value}, "action": action}
        decision = await node.policies.decide(ADMIN_PATH, input)
        event_type, payload = node.policies.record(decision, input)
        await node.ledger.append_record_async(event_type, payload)
        if decision.allowed:
            return key
        if decision.reason != "denied":
            detail = (
                f"{ADMIN_PATH}: the policy could not decide ({decision.reason}), "
                f"so {action} is refused"
            )
            unavailable = decision.reason in UNAVAILABLE_REASONS
            raise policy_problem(unavailable, detail, decision.decision_id)
        result = decision.result if isinstance(decision.result, dict) else {}
        reasons = result.get("reasons")
        said = "; ".join(map(str, reasons)) if isinstance(reasons, list) else ""
        raise Problem(
            403,
            "forbidden",
            said or f"the admin policy refuses {action} to scope {key.scope.value}",
            decision_id=decision.decision_id,
        )

    return check
