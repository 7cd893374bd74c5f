"""A raw RESP2 client over a plain socket: send exact bytes, read exact replies."""

from __future__ import annotations

import socket
import time

from shared.resp import NEED_MORE, ReplyParser


class RawClient:
    def __init__(self, host: str, port: int, timeout: float = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.parser = ReplyParser()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_command(self, *args) -> None:
        self.send(encode_command(*args))

    def read(self):
        """The next reply; raises ConnectionError if the server closes first."""
        while True:
            reply = self.parser.next_reply()
            if reply is not NEED_MORE:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.parser.feed(data)

    def call(self, *args):
        self.send_command(*args)
        return self.read()

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
        except (TimeoutError, socket.timeout):
            return False
        return False


def encode_command(*args) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)
