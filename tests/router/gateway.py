"""Helpers for router tests: a node in this process routing to fake providers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from fakes.server import FakeServer
from penin.api.app import create_app
from penin.config import load_settings
from penin.keys import Scope

CHAT = "/v1/chat/completions"
KEY_ENV = "FAKE_PROVIDER_KEY"  # the fakes want some bearer key, any will do
os.environ.setdefault(KEY_ENV, "test-provider-key")
PROMPT = "three words here"  # 3 tokens to the fakes: one per word
REPLY_TOKENS = 5  # the fakes' default reply, "Hello from the fake provider."
# Prices of the test deployments, USD per million tokens.
INPUT_PER_MTOK = 1.0
OUTPUT_PER_MTOK = 2.0
COST_NUSD = 3 * 1000 + REPLY_TOKENS * 2000  # 3 in × 1e3 + 5 out × 2e3 nano-USD


def chat(model: str = "fast", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


def provider(name: str, fake: FakeServer, kind: str = "openai") -> dict[str, Any]:
    base = fake.base_url + ("/v1" if kind == "openai" else "")
    return {"name": name, "kind": kind, "base_url": base, "api_key_env": KEY_ENV}


def deployment(
    provider_name: str, model: str = "gpt-4o-mini", **extra: Any
) -> dict[str, Any]:
    return {
        "provider": provider_name,
        "model": model,
        "input_per_mtok": INPUT_PER_MTOK,
        "output_per_mtok": OUTPUT_PER_MTOK,
        **extra,
    }


@dataclass
class Gateway:
    client: TestClient
    token: str

    @property
    def node(self) -> Any:
        return self.client.app.state.node  # type: ignore[attr-defined]

    def post(self, body: dict[str, Any], **headers: str) -> Any:
        auth = {"Authorization": f"Bearer {self.token}", **headers}
        return self.client.post(CHAT, json=body, headers=auth)

    def records(self) -> list[dict[str, Any]]:
        found = self.node.ledger.query(event_type="router.request", limit=1000)
        return [r.payload for r in found]


@contextmanager
def gateway(tmp_path: Path, **config: Any) -> Iterator[Gateway]:
    """A node with ``config`` (providers, models, budget, router…) on tmp_path."""
    settings = load_settings(overrides={"data_dir": tmp_path / "data", **config})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        token, _ = client.app.state.node.keyring.create(Scope.ROUTE)  # type: ignore[attr-defined]
        yield Gateway(client, token)
