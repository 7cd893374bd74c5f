"""The tests' servers: client/servers.py's, with a raw test client and redis-py on hand."""

from __future__ import annotations

import sys

import redis

from contend.client import servers
from contend.client.servers import BANNER, ROOT, free_port  # noqa: F401  (tests import these from here)
from tests.raw import RawClient

# The `contend` command as this interpreter runs it: no PATH lookup, no activated venv needed.
CONTEND = [sys.executable, "-m", "contend"]


class TestServer(servers.RunningServer):
    __test__ = False   # not a test class, whatever pytest thinks of the name

    def raw(self, timeout: float = 10) -> RawClient:
        return RawClient(self.host, self.port, timeout)

    def redis(self, **options) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, socket_timeout=10, **options)


def start_contend(model: str, *flags: str) -> TestServer:
    return servers.start_contend(model, *flags, server_class=TestServer)


def start_redis() -> TestServer:
    return servers.start_redis(server_class=TestServer)
