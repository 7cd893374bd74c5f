"""A small blocking RESP2 client on a plain socket: what the demo and the load clients use."""

from __future__ import annotations

import socket

from contend.shared.resp import NEED_MORE, ReplyParser, encode_command


class Connection:
    """One TCP connection to a server; `call` sends a command and returns its reply.

    An error reply comes back as a `shared.resp.ReplyError` value, not raised:
    a load client counts errors, it does not stop at the first.
    """

    def __init__(self, host: str, port: int, timeout: float | None = 10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
