"""Fixtures: contend's models and a real redis-server, on free loopback ports."""

from __future__ import annotations

import pytest

from tests.servers import start_contend, start_redis

# Every model runs the one conformance suite; a new model joins by adding its name.
MODELS = ["threads", "trio", "selectors"]


@pytest.fixture(scope="session")
def redis_server():
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_servers():
    """One server per model with default flags, started when first asked for."""
    started = {}

    def get(model: str):
        if model not in started:
            started[model] = start_contend(model)
        return started[model]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(params=MODELS)
def contend_server(request, shared_servers):
    return shared_servers(request.param)


@pytest.fixture(params=MODELS + ["redis"])
def target(request, shared_servers, redis_server):
    """Each model's shared server, and the real redis-server.

    A test marked `contend_only(reason)` checks a limit where contend's
    contract (docs/design.md) deliberately differs from Redis; it skips on Redis.
    """
    if request.param == "redis":
        marker = request.node.get_closest_marker("contend_only")
        if marker:
            pytest.skip(marker.args[0])
        return redis_server
    return shared_servers(request.param)


def pytest_configure(config):
    config.addinivalue_line("markers", "contend_only(reason): not run against redis-server")


@pytest.fixture
def model(contend_server):
    return contend_server.name


@pytest.fixture
def server(contend_server):
    """The model's shared server, emptied before the test."""
    with contend_server.raw() as client:
        client.call("FLUSHALL")
        client.call("CONFIG", "SET", "sync", "lock", "race-window-us", "0", "pool-size", "4")
        client.call("CONFIG", "RESETSTAT")
    return contend_server


@pytest.fixture
def serve():
    """Start a server of a given model with given flags; stopped after the test."""
    started = []

    def start(model: str, *flags: str):
        server = start_contend(model, *flags)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
