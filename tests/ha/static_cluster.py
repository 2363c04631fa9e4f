"""A cluster of real ``penin serve`` processes on loopback, static coordinator.

Each member has its own data directory, port, config file and log. The first
member is the primary; the others follow it. The cluster's signing key is the
primary's, copied into each replica's data directory before it first starts,
as an operator would. Every member started is stopped by ``stop_all``.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from members import Members, Row

from harness import LiveServer, wait_for
from penin.keys import Scope
from penin.ledger import merkle
from penin.ledger.ledger import WORMLedger

ORIGIN = "test.local/cluster"
CATCH_UP_S = 10.0


class StaticCluster(Members):
    def __init__(self, root: Path, names: tuple[str, ...] = ("n1", "n2")) -> None:
        super().__init__(root, names)
        self.primary_name = names[0]
        self._create_primary_ledger()

    def settings(self, name: str) -> dict[str, Any]:
        cluster = {
            "coordinator": "static",
            "primary": self.primary_name,
            "primary_url": self.url(self.primary_name),
            "replication": "async",
        }
        return {**super().settings(name), "cluster": cluster}

    def copy_key(self, name: str) -> None:
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.key_path, self.data_dir(name) / "ledger.key")

    def start(self, name: str, *, copy_key: bool = True) -> LiveServer:
        if copy_key and name != self.primary_name:
            self.copy_key(name)

        return super().start(name)

    def start_all(self) -> StaticCluster:
        for name in self.names:
            self.start(name)

        return self

    @property
    def primary(self) -> LiveServer:
        return self.servers[self.primary_name]

    @property
    def key_path(self) -> Path:
        return self.data_dir(self.primary_name) / "ledger.key"

    def _create_primary_ledger(self) -> None:
        self.data_dir(self.primary_name).mkdir(parents=True)
        WORMLedger(self.data_dir(self.primary_name) / "ledger.db").initialize(
            ORIGIN
        ).close()

    # -- what the members hold ---------------------------------------------------------

    def root_of(self, name: str) -> bytes:
        return merkle.root_from_leaves([row[-1] for row in self.rows(name)])

    def checkpoint_sizes(self, name: str) -> list[int]:
        path = self.data_dir(name) / "ledger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT tree_size FROM checkpoints ORDER BY tree_size")
            return [row[0] for row in rows]
        finally:
            conn.close()

    def wait_until_identical(
        self, *names: str, timeout: float = CATCH_UP_S
    ) -> list[Row]:
        """Wait until each named replica holds exactly the primary's rows."""

        def identical() -> list[Row] | None:
            expected = self.rows(self.primary_name)
            if all(self.rows(name) == expected for name in names):
                return expected
            return None

        return wait_for(
            identical, timeout, f"{', '.join(names)} to hold the primary's rows"
        )

    def token_of(self, scope: Scope) -> str:
        """A key created on the primary, as an operator does: the CLI on its data."""
        return self.primary.token(scope)
