"""The router's policy gate: the budget and routing decisions of one request.

Before anything goes upstream two Rego policies decide.
``penin/budget/decision`` sees the day's spend and limits;
``penin/router/decision`` sees the key, the requested model and data class,
every deployment the request could reach (its model's and its fallbacks') with
the data classes each may receive, and the budget's state. Their answers are
obeyed as given: a refusal is an error, only the deployments named are tried,
and a downgrade sends the cheapest of them first. A policy can make a budget
stricter, never looser: the store's atomic reservation still enforces the
configured limits exactly. Each decision is kept on the request's outcome and
written, as a ``policy.decision`` record, with its ``router.request`` record.
"""

from __future__ import annotations

from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

import structlog

from penin.ledger import jcs
from penin.policy import Decision, Policies
from penin.router.audit import Outcome
from penin.router.budget import BudgetStatus
from penin.router.deployments import Deployment, Group
from penin.router.errors import BudgetExceededError, PolicyDeniedError

log = structlog.get_logger("penin.router")

BUDGET_PATH = "penin/budget/decision"
ROUTER_PATH = "penin/router/decision"
DENIED = "denied"
# The budget policy names its limits; the router's metrics and records use
# the budget's scopes.
_SCOPES = {"daily": "global", "per_key": "key"}


@dataclass(frozen=True, slots=True)
class Admission:
    """What the router policy let a request do."""

    deployments: frozenset[str]  # the only deployments it may be sent to
    downgrade: bool  # the cheapest of them first, whatever the strategy


class Gate:
    """Asks the policies about each request of the router's logical models."""

    def __init__(self, policies: Policies, groups: dict[str, Group]) -> None:
        self.policies = policies
        self._reach = {name: reachable(groups, name) for name in groups}
        # Built once: each request's input shares these lists.
        self._described = {
            name: [_describe(d) for d in deployments]
            for name, deployments in self._reach.items()
        }
        # And their RFC 8785 text, with the model's: the part of the routing
        # question that is the same for every request of a model.
        self._fixed = {
            name: (_json(name), jcs.dumps(described))
            for name, described in self._described.items()
        }

    async def budget(self, status: BudgetStatus, outcome: Outcome) -> str | None:
        """The scope at its soft limit (``global``, ``key``), or None: by the
        policy's threshold or by ``budget.soft_fraction``, whichever is lower.

        Raises BudgetExceededError when the policy finds a hard limit passed,
        PolicyDeniedError when it could not decide.

        The request's own cost is sent as 0. Its worst case depends on the
        deployment, and the store reserves it exactly, in nano-USD, when one
        is tried; added to the day's spend in the policy's floating-point
        USD, it would refuse calls the limit admits (6e-05 + 1e-05 is more
        than 7e-05 there).
        """
        input = {
            "spent_usd": {
                "day": status.global_committed_usd,
                "key": status.key_committed_usd,
            },
            "limits": {
                "daily_usd": status.global_limit_usd,
                "per_key_daily_usd": status.key_limit_usd,
            },
            "request_usd": 0,
        }
        decision = await self._decide(BUDGET_PATH, input, outcome)
        result = decision.result if isinstance(decision.result, dict) else {}
        if decision.reason == DENIED:
            raise _exceeded(status, result.get("limit"), outcome.key_id)
        if not decision.allowed:
            raise _refusal(decision)
        if result.get("state") == "soft":
            return _SCOPES.get(str(result.get("limit")), "global")
        # The configured soft_fraction holds as well: like the hard limit, a
        # policy may make the soft limit stricter, never looser.
        return status.soft_scope

    async def route(
        self, group: Group, outcome: Outcome, budget_state: str | None
    ) -> Admission:
        """The deployments ``outcome``'s request may go to; PolicyDeniedError if none.

        ``budget_state`` is None for an answer served from the cache, which
        spends nothing and so asks no budget.
        """
        caller = outcome.caller
        input = {
            "key": {
                "id": outcome.key_id,
                "scope": caller.scope,
                "data_class": caller.data_class,
                "models": None if caller.models is None else list(caller.models),
            },
            "request": {"model": group.name, "data_class": caller.declared_class},
            "deployments": self._described[group.name],
            "budget": {"state": budget_state},
        }
        text = self._route_text(group.name, input)
        decision = await self._decide(ROUTER_PATH, input, outcome, text)
        if not decision.allowed:
            raise _refusal(decision)
        result = decision.result if isinstance(decision.result, dict) else {}
        names = result.get("deployments")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            log.warning(
                "router.policy_result_malformed",
                path=ROUTER_PATH,
                decision_id=decision.decision_id,
            )
            raise PolicyDeniedError(
                ROUTER_PATH, "malformed_result", [], decision.decision_id
            )
        data_class = result.get("data_class")
        outcome.data_class = data_class if isinstance(data_class, str) else None

        return Admission(
            deployments=frozenset(names),
            downgrade=result.get("downgrade") is True,
        )

    def _route_text(self, model: str, input: dict[str, Any]) -> str | None:
        """The RFC 8785 text of ``route``'s ``input``, written around the
        model's fixed part; None if a field is not JSON (the engine then
        refuses the input, as it refuses any).

        The canonical text of an object is its members' texts in name order
        (RFC 8785 §3.2.3), so the names below are in that order.
        """
        name, deployments = self._fixed[model]
        key, request = input["key"], input["request"]
        try:
            budget = f'{{"state":{_json(input["budget"]["state"])}}}'
            key_text = (
                f'{{"data_class":{_json(key["data_class"])},"id":{_json(key["id"])},'
                f'"models":{_json(key["models"])},"scope":{_json(key["scope"])}}}'
            )
            request_text = (
                f'{{"data_class":{_json(request["data_class"])},"model":{name}}}'
            )
        except (TypeError, ValueError):
            return None

        return (
            f'{{"budget":{budget},"deployments":{deployments},'
            f'"key":{key_text},"request":{request_text}}}'
        )

    async def _decide(
        self,
        path: str,
        input: dict[str, Any],
        outcome: Outcome,
        text: str | None = None,
    ) -> Decision:
        decision = await self.policies.decide(path, input, text)
        outcome.decisions.append(self.policies.record(decision, input))

        return decision


def reachable(groups: dict[str, Group], name: str) -> list[Deployment]:
    """Every deployment a request for ``name`` may be sent to, once each.

    The model's own, then those of every model its fallbacks (of any kind)
    lead to, as the routing loop may go on to them.
    """
    order, seen = [name], {name}
    for current in order:
        config = groups[current].config
        for target in (
            *config.fallbacks,
            *config.context_window_fallbacks,
            *config.content_policy_fallbacks,
        ):
            if target not in seen:
                seen.add(target)
                order.append(target)

    unique: dict[str, Deployment] = {}
    for current in order:
        for deployment in groups[current].deployments:
            unique.setdefault(deployment.name, deployment)

    return list(unique.values())


def _describe(deployment: Deployment) -> dict[str, Any]:
    return {
        "name": deployment.name,
        "provider": deployment.config.provider,
        "data_classes": list(deployment.config.data_classes),
    }


def _json(value: object) -> str:
    """The RFC 8785 text of ``value``: strings, null and arrays written here,
    as ``jcs`` would (its compiled ``json`` writer), anything else by ``jcs``."""
    if type(value) is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if type(value) is list:
        return "[" + ",".join([_json(item) for item in value]) + "]"

    return jcs.dumps(value)


def _refusal(decision: Decision) -> PolicyDeniedError:
    result = decision.result if isinstance(decision.result, dict) else {}
    reasons = result.get("reasons")
    said = [str(r) for r in reasons] if isinstance(reasons, list) else []

    return PolicyDeniedError(
        decision.path, decision.reason or DENIED, said, decision.decision_id
    )


def _exceeded(status: BudgetStatus, limit: object, key_id: str) -> BudgetExceededError:
    scope = _SCOPES.get(str(limit), "global")
    if scope == "key":
        bound, committed = status.key_limit_usd, status.key_committed_usd
    else:
        bound, committed = status.global_limit_usd, status.global_committed_usd
    log.info(
        "budget.refused",
        scope=scope,
        key_id=key_id,
        committed_usd=committed,
        by="policy",
    )

    return BudgetExceededError(scope, bound or 0.0, committed)
