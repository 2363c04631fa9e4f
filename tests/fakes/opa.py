"""A fake OPA server: the REST Data API over a policy directory, evaluated by regorus.

``POST /v1/data/{path}`` with ``{"input": ...}`` answers ``{"result": ...}``,
or ``{}`` when the path is undefined, as OPA does; an evaluation error is a
500 with OPA's error document. With ``?provenance=true`` the answer names one
bundle, ``penin``, whose revision is the policy set's digest. Scripted faults
(`Fault.server_error`, `malformed_json`, `hang`, `reset`, `disconnect`, and
any fault `slowed`) break the exchange as they do for the provider fakes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import regorus

from fakes.fault import Fault, Kind
from fakes.server import FakeServer
from fakes.wire import Reply, Request, json_reply
from penin.policy.policyset import PolicySet, load_policy_set

ROUTE_PREFIX = "/v1/data/"


class FakeOpa(FakeServer):
    """Serves one policy set, the shipped bundle with ``user_dir`` over it."""

    name = "opa"
    kinds = frozenset(
        {
            Kind.OK,
            Kind.SERVER_ERROR,
            Kind.MALFORMED_JSON,
            Kind.HANG,
            Kind.RESET,
            Kind.DISCONNECT,
        }
    )

    def __init__(self, user_dir: Path | None = None) -> None:
        super().__init__()
        self.policy_set: PolicySet = load_policy_set(user_dir)
        # A regorus engine is bound to the thread that made it, and must be
        # dropped there too: the server thread's own slot is freed as it ends.
        self._local = threading.local()

    def check(self, request: Request) -> Reply | None:
        if request.method != "POST" or not request.path.startswith(ROUTE_PREFIX):
            return _error(404, "resource_not_found", f"no route {request.path}")
        body = request.json
        if not isinstance(body, dict):
            return _error(400, "invalid_parameter", "body must be a JSON object")

        return None

    def failure(self, request: Request, fault: Fault) -> Reply:
        return _error(fault.status, "internal_error", "scripted server error")

    def answer(self, request: Request, fault: Fault) -> Reply:
        path = request.path.removeprefix(ROUTE_PREFIX).strip("/")
        # Brackets, so that a segment that is a keyword (every) reads as a name.
        query = "data" + "".join(f'["{s}"]' for s in path.split("/") if s)
        engine = self._regorus()
        try:
            engine.set_input_json(json.dumps(request.json.get("input")))
            results = json.loads(engine.eval_query_as_json(query)).get("result")
        except RuntimeError as exc:
            message = str(exc).split("Stack backtrace:", 1)[0].strip()
            return _error(500, "internal_error", message)
        answer: dict[str, Any] = {}
        if results:
            answer["result"] = results[0]["expressions"][0]["value"]
        if request.query.get("provenance") == "true":
            answer["provenance"] = {
                "version": "fake",
                "bundles": {"penin": {"revision": self.policy_set.digest}},
            }

        return json_reply(200, answer)

    def _regorus(self) -> regorus.Engine:
        engine: regorus.Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = regorus.Engine()
            engine.set_rego_v0(False)
            for module in self.policy_set.modules:
                engine.add_policy(module.path, module.text)
            engine.add_data_json(json.dumps(self.policy_set.data))
            self._local.engine = engine

        return engine


def _error(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"code": code, "message": message})
