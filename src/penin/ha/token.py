"""The cluster token: the shared secret with which members prove they are members.

A replica presents it to its primary as a bearer token on every replication
request. It is read only from the environment (``PENIN_CLUSTER_TOKEN``) or
from the file ``cluster.token_file`` names, never from the config file's
values; it is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from penin.ha.config import ClusterConfig
from penin.ha.errors import ClusterSetupError

TOKEN_ENV = "PENIN_CLUSTER_TOKEN"  # noqa: S105 - the variable's name, no secret
MIN_TOKEN_CHARS = 32


class ClusterToken:
    """A loaded token. Its text is reachable only through ``headers``."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_TOKEN_CHARS or not secret.isascii() or " " in secret:
            raise ClusterSetupError(
                f"the cluster token must be at least {MIN_TOKEN_CHARS} printable "
                "ASCII characters without spaces (e.g. from 'openssl rand -hex 32')"
            )
        self._secret = secret.encode()

    @classmethod
    def load(cls, cluster: ClusterConfig) -> ClusterToken:
        """The token from ``PENIN_CLUSTER_TOKEN`` or ``cluster.token_file``."""
        from_env = os.environ.get(TOKEN_ENV)
        if from_env is not None and cluster.token_file is not None:
            raise ClusterSetupError(
                f"both {TOKEN_ENV} and cluster.token_file are set; keep one, so "
                "that there is no doubt which token this node presents"
            )
        if from_env is not None:
            return cls(from_env.strip())
        if cluster.token_file is not None:
            return cls(_read(cluster.token_file))

        raise ClusterSetupError(
            "a node in a cluster needs the cluster token: set "
            f"{TOKEN_ENV}, or cluster.token_file to a file that holds it "
            "(the same token on every node)"
        )

    def matches(self, presented: str) -> bool:
        """Whether ``presented`` is the token, in time that does not depend on it."""
        return hmac.compare_digest(presented.encode(), self._secret)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret.decode()}"}

    def __repr__(self) -> str:
        return "ClusterToken(<hidden>)"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ClusterSetupError(
            f"cannot read cluster.token_file {path}: {exc.strerror}"
        ) from None
    except UnicodeDecodeError:
        raise ClusterSetupError(
            f"cluster.token_file {path} does not hold text"
        ) from None
