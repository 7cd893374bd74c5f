"""Fixtures: contend's models and a real redis-server, on free loopback ports."""

from __future__ import annotations

import pytest

from tests.servers import start_contend, start_redis

# Every model runs the one conformance suite; a new model joins by adding its name.
# "asyncio+uvloop" is the asyncio model on uvloop's event loop (`--loop uvloop`).
MODELS = ["threads", "trio", "selectors", "asyncio", "asyncio+uvloop", "processes"]


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
    config.addinivalue_line("markers", "slow: needs real servers or subprocesses")


# The slow tier: `pytest -m "not slow"` leaves the parser, the session, the in-process
# model and the lock order, in seconds. A test is slow when it asks for a server...
SLOW_FIXTURES = {"redis_server", "shared_servers", "contend_server", "target", "server",
                 "serve", "model", "fresh_venv"}
# ...or lives in a module whose every test starts servers or subprocesses...
SLOW_MODULES = {"test_demo", "test_compose", "test_load", "test_real_clients",
                "test_server_lifecycle", "test_misbehaving_clients",
                "test_protocol_robustness", "test_race_lab", "test_seam", "test_free_threaded",
                "test_locust"}
# ...or is one of these, in modules whose other tests read files or call functions.
SLOW_TESTS = {"test_bench": {"test_tiny_matrix_writes_table_csv_json_and_charts",
                             "test_without_matplotlib_it_says_how_to_install_and_writes_the_rest"},
              "test_labs": {"test_lab_sheet_runs_as_written"},
              "test_hiredis_parser": {"test_parser_flag_is_what_info_reports_and_both_frame_alike"},
              "test_step_cli": {"test_usage_errors_are_one_line_and_exit_2",
                                "test_an_unreachable_target_is_one_line_and_exit_3"},
              "test_grade": {
                  "test_racy_server_passes_ping_and_fails_the_incr_stage_with_its_lost_updates"},
              "test_redis_baseline": {
                  "test_one_small_round_writes_its_section_into_the_doc_and_json",
                  "test_a_client_past_its_timeout_is_killed_with_what_it_started"},
              "test_top": {"test_dashboard_in_a_terminal_shows_both_servers_and_quits_cleanly",
                           "test_without_a_terminal_sigterm_stops_it_with_status_zero"}}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        module = module.__name__.rpartition(".")[2] if module else ""
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or module in SLOW_MODULES
                or getattr(item, "originalname", "") in SLOW_TESTS.get(module, ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def model(contend_server):
    return contend_server.name


@pytest.fixture
def server(contend_server):
    """The model's shared server, emptied before the test."""
    with contend_server.raw() as client:
        client.call("FLUSHALL")
        client.call("CONFIG", "SET", "sync", "lock", "race-window-us", "0", "pool-size", "4",
                    "deadlock-timeout-ms", "1000", "race-window", "timed")
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
