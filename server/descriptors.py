"""One descriptor kept in reserve, so that a server out of descriptors can still say no.

When the process has no descriptor left, accept() fails with EMFILE and the
client stays in the listen queue: connected, as far as its kernel knows, and
never answered. Pausing and retrying (what trio.serve_listeners does) only
waits for someone else to leave. Every model keeps one descriptor (an open
/dev/null) for the moment instead: it closes it, accepts the waiting client
with the number it frees, sends Redis's maxclients line, closes that socket
and opens the spare again. This is the "idle fd" trick of libev's
documentation and of nginx.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from contextlib import suppress

# accept()'s errors that mean "no descriptor for you": this process's (EMFILE) or the system's.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class SpareDescriptor:
    def __init__(self) -> None:
        self._fd: int | None = None
        self._reopen()

    def refuse_one(self, listener: socket.socket, refusal: Callable[[], bytes]) -> bool:
        """Accept one waiting client on the spare's descriptor, send it `refusal()` and close it.

        False when nobody was waiting or the freed number went elsewhere first
        (another thread's socket); the caller then pauses as before. Either
        way the spare is open again afterwards, if the process has one to give.
        """
        if self._fd is None:   # spent earlier and not yet back: try again
            self._reopen()
            return False
        os.close(self._fd)
        self._fd = None
        try:
            client, _ = listener.accept()
        except OSError:   # BlockingIOError: nobody waits; EMFILE: the number went elsewhere
            client = None
        if client is not None:
            with client, suppress(OSError):
                client.setblocking(False)   # one short line fits any send buffer
                client.send(refusal())
        self._reopen()
        return client is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _reopen(self) -> None:
        with suppress(OSError):
            self._fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
