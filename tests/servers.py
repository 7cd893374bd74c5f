"""The tests' servers: client/servers.py's, with a raw test client and redis-py on hand."""

from __future__ import annotations

import redis

from client import servers
from client.servers import BANNER, ROOT, free_port  # noqa: F401  (tests import these from here)
from tests.raw import RawClient


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
