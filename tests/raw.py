"""The test client: contend's own Connection, plus a check that the server hung up."""

from __future__ import annotations

import time

from contend.client.connection import Connection


class RawClient(Connection):
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
