"""The HTTP client a replica talks to its primary with.

Four calls, all authenticated with the cluster token: ``identity`` (which
log the primary writes), ``batch`` (the records after a seq, waiting up to a
few seconds for new ones), ``snapshot`` (an online copy of the primary's
ledger with its manifest, for a new replica) and ``report_quarantine``.
Any failure — no connection, a timeout, a status other than 200, a body of
the wrong shape — is a ``StreamError`` carrying the status when there was
one, so the follower can tell a refusal from an outage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from penin._session import LazySession
from penin.ha.errors import StreamError
from penin.ha.stream import Batch, Identity, W, parse
from penin.ha.token import ClusterToken

IDENTITY_PATH = "/v1/replication/ledger"
RECORDS_PATH = "/v1/replication/records"
SNAPSHOT_PATH = "/v1/replication/snapshot"
QUARANTINED_PATH = "/v1/replication/quarantined"
MANIFEST_HEADER = "Penin-Snapshot-Manifest"
# A snapshot is the whole ledger: it may take long to copy and to send.
SNAPSHOT_S = 3600.0
_CHUNK = 1 << 20
# Beyond the primary's wait, time for the answer itself to arrive.
ANSWER_S = 10.0
CONNECT_S = 3.0


class PrimaryClient:
    """Calls to the primary at ``url`` on behalf of the replica ``replica``."""

    def __init__(self, url: str, token: ClusterToken, replica: str) -> None:
        self.url = url
        self._token = token
        self._replica = replica
        self._session = LazySession()

    async def identity(self) -> Identity:
        return await self._get(IDENTITY_PATH, {}, Identity, wait_s=0.0)

    async def batch(
        self, after_seq: int, checkpoint_size: int, limit: int, wait_s: float
    ) -> Batch:
        params = {
            "after_seq": after_seq,
            "checkpoint_size": checkpoint_size,
            "limit": limit,
            "wait_s": wait_s,
            "replica": self._replica,
        }

        return await self._get(RECORDS_PATH, params, Batch, wait_s=wait_s)

    async def snapshot(self, target: Path) -> dict[str, Any]:
        """Download the primary's snapshot into ``target``; its manifest.

        The file is written as it arrives and fsynced; nothing in it is
        trusted before ``penin.ledger.backup.check_backup`` verifies it.
        """
        url = self.url + SNAPSHOT_PATH
        timeout = aiohttp.ClientTimeout(total=SNAPSHOT_S, sock_connect=CONNECT_S)
        try:
            async with self._session.get().get(
                url, headers=self._token.headers(), timeout=timeout
            ) as response:
                if response.status != 200:
                    body = await response.read()
                    raise StreamError(
                        url, _refusal(response.status, body), status=response.status
                    )
                manifest = json.loads(response.headers.get(MANIFEST_HEADER, "null"))
                with target.open("wb") as sink:
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        sink.write(chunk)
                    sink.flush()
                    os.fsync(sink.fileno())
        except TimeoutError:
            raise StreamError(url, "no snapshot in time") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise StreamError(url, f"cannot fetch the snapshot: {exc}") from None
        if not isinstance(manifest, dict):
            raise StreamError(url, f"the snapshot came without its {MANIFEST_HEADER}")

        return manifest

    async def report_quarantine(self, report: dict[str, Any]) -> None:
        """Ask the primary to record a quarantine; StreamError if it did not."""
        await self._call("POST", QUARANTINED_PATH, ANSWER_S, {"json": report})

    async def _get(
        self, path: str, params: dict[str, Any], model: type[W], *, wait_s: float
    ) -> W:
        body = await self._call("GET", path, wait_s + ANSWER_S, {"params": params})

        return parse(model, body, self.url + path)

    async def _call(
        self, method: str, path: str, total_s: float, options: dict[str, Any]
    ) -> bytes:
        """The body of a 2xx answer; StreamError for anything else."""
        url = self.url + path
        timeout = aiohttp.ClientTimeout(total=total_s, sock_connect=CONNECT_S)
        try:
            async with self._session.get().request(
                method, url, headers=self._token.headers(), timeout=timeout, **options
            ) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise StreamError(url, "no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamError(url, f"cannot reach the primary: {exc}") from None
        if not 200 <= status < 300:
            raise StreamError(url, _refusal(status, body), status=status)

        return body

    async def close(self) -> None:
        await self._session.close()


def _refusal(status: int, body: bytes) -> str:
    """What the primary said, from its problem document when it sent one."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None

    return f"the primary answered {status}: {detail or body[:200]!r}"
