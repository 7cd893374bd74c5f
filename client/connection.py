"""A small blocking RESP2/RESP3 client on a plain socket: what the demo and the load clients use."""

from __future__ import annotations

import socket

from contend.shared.resp import NEED_MORE, ReplyError, ReplyParser, encode_command


class Connection:
    """One TCP connection to a server; `call` sends a command and returns its reply.

    An error reply comes back as a `shared.resp.ReplyError` value, not raised:
    a load client counts errors, it does not stop at the first.

    `protocol=3` sends `HELLO 3` first, so every reply after it is RESP3 (maps
    come back as dicts, nulls as None; see `shared.resp.ReplyParser`).
    """

    def __init__(self, host: str, port: int, timeout: float | None = 10, protocol: int = 2):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ReplyParser()
        self.protocol = 2
        if protocol != 2:
            try:
                self.hello(protocol)
            except BaseException:
                self.close()
                raise

    def hello(self, protocol: int, *options) -> dict:
        """Switch this connection's protocol (HELLO); returns the server's map, or raises."""
        reply = self.call("HELLO", protocol, *options)
        if isinstance(reply, ReplyError):
            raise ConnectionError(f"HELLO {protocol} refused: {reply}")
        self.protocol = protocol
        return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))

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

    def receive(self) -> bytes:
        """The next bytes from the server; raises ConnectionError once it has closed."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        return data

    def read(self):
        """The next reply; raises ConnectionError if the server closes first."""
        while (reply := self.parser.next_reply()) is NEED_MORE:
            self.parser.feed(self.receive())
        return reply

    def call(self, *args):
        self.send_command(*args)
        return self.read()


def parse_info(text: str) -> dict[str, str]:
    """INFO's `name:value` lines as a dict; section headers and blank lines dropped."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value.strip()
    return fields
