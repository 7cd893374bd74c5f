"""The test client: contend's own Connection, plus a check that the server hung up and
a transcript of every byte it received (to hold a RESP2 client to RESP2's types)."""

from __future__ import annotations

import time

from contend.client.connection import Connection

RESP3_TYPES = frozenset("_%~,#=(!>|")   # the first bytes only RESP3 replies start with


class RawClient(Connection):
    def __init__(self, *args, **kwargs):
        self.transcript = bytearray()   # every byte received, in order
        super().__init__(*args, **kwargs)

    def receive(self) -> bytes:
        data = super().receive()
        self.transcript += data
        return data

    def closed_by_server(self, timeout: float = 5) -> bool:
        """True once the server has closed this connection (reads to the end)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return False


def reply_types(data: bytes) -> set[str]:
    """The type of every reply and nested element in `data` (`$`, `*`, `%`, ...),
    skipping the payloads of bulk strings, verbatim strings and blob errors."""
    seen, pos = set(), 0
    while pos < len(data):
        newline = data.index(b"\r\n", pos)
        kind, length = data[pos:pos + 1], data[pos + 1:newline]
        seen.add(kind.decode("latin-1"))
        pos = newline + 2
        if kind in (b"$", b"=", b"!") and int(length) >= 0:
            pos += int(length) + 2
    return seen
