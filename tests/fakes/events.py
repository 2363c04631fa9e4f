"""Server-sent events read back the way a client splits them, for the fakes' tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    name: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse(body: bytes) -> list[Event]:
    """The events of a stream body; CRLF and LF line endings are both accepted."""
    text = body.decode().replace("\r\n", "\n")
    found = []
    for block in filter(None, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append(Event(fields.get("event"), fields.get("data", "")))

    return found
