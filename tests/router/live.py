"""Helpers for router tests against a real ``penin serve`` process on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from gateway import CHAT, KEY_ENV

from harness import LiveServer, node_env, running_server
from penin.keys import Scope

DONE = "[DONE]"
COST_COMMENT = ": penin-cost-usd="


@dataclass
class LiveNode:
    """A node with a ``route`` key for chats and a ``read`` key for the ledger."""

    server: LiveServer
    route_token: str
    read_token: str

    def records(self) -> list[dict[str, Any]]:
        """Every ``router.request`` record in the node's ledger, oldest first."""
        with self.server.client(self.read_token) as http:
            response = http.get(
                "/v1/ledger/records",
                params={"event_type": "router.request", "limit": 1000},
            )
        assert response.status_code == 200, response.text

        return [r["payload"] for r in response.json()["records"]]

    def record(self, request_id: str) -> dict[str, Any] | None:
        found = [r for r in self.records() if r["request_id"] == request_id]
        assert len(found) <= 1, found

        return found[0] if found else None

    def chat(self) -> httpx.Client:
        return self.server.client(self.route_token)

    def metrics(self) -> str:
        response = self.server.get("/metrics")
        assert response.status_code == 200, response.text

        return response.text


@contextmanager
def live_node(directory: Path, config: dict[str, Any]) -> Iterator[LiveNode]:
    """``penin serve --config`` with ``config`` written as YAML, stopped at the end."""
    path = directory / "penin.yaml"
    path.write_text(yaml.safe_dump(config))
    env = node_env(**{KEY_ENV: "test-provider-key"})
    with running_server(directory, "--config", path, env=env) as server:
        yield LiveNode(server, server.token(Scope.ROUTE), server.token(Scope.READ))


@dataclass
class SseReply:
    """What a client read from one streamed answer, line by line as it arrived."""

    request_id: str
    headers: httpx.Headers
    lines: list[str] = field(default_factory=list)

    @property
    def data(self) -> list[str]:
        return [
            line.removeprefix("data: ") for line in self.lines if line[:6] == "data: "
        ]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The JSON events, in order; ``[DONE]`` is not one."""
        return [json.loads(d) for d in self.data if d != DONE]

    @property
    def text(self) -> str:
        return "".join(
            choice["delta"].get("content") or ""
            for chunk in self.chunks
            for choice in chunk.get("choices") or []
        )

    @property
    def usage_chunks(self) -> list[dict[str, Any]]:
        return [c for c in self.chunks if c.get("usage")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [c["error"] for c in self.chunks if "error" in c]

    @property
    def done(self) -> bool:
        return DONE in self.data

    @property
    def cost_usd(self) -> float | None:
        costs = [line for line in self.lines if line.startswith(COST_COMMENT)]
        assert len(costs) <= 1, costs

        return float(costs[0].removeprefix(COST_COMMENT)) if costs else None


def stream(http: httpx.Client, body: dict[str, Any]) -> SseReply:
    """POST a streaming chat and read the whole answer."""
    with http.stream("POST", CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        reply = SseReply(response.headers["x-request-id"], response.headers)
        reply.lines = [line for line in response.iter_lines() if line]

    return reply
