"""INFO's text: Redis's sections, plus one for the playground."""

from __future__ import annotations

import os
import sys
import time

from contend.shared.state import REDIS_VERSION, VERSION, ServerState

DEFAULT_SECTIONS = ("server", "clients", "stats", "keyspace", "playground")


def gil() -> str:
    """'on', or 'off' on a free-threaded CPython (PEP 703) running without it."""
    enabled = getattr(sys, "_is_gil_enabled", None)
    return "on" if enabled is None or enabled() else "off"


def render_info(state: ServerState, model_fields: dict, sections: list[str], asking=None) -> bytes:
    """INFO's text; `asking` (the client running INFO) is not counted as a command in flight."""
    wanted = set(sections) or {"default"}
    if wanted & {"all", "everything", "default"}:
        wanted = set(DEFAULT_SECTIONS)
    config, keyspace = state.config, state.keyspace
    pool = {name.decode(): value for name, value in state.ledger.status().items()}
    keys = keyspace.size()
    uptime = int(time.time() - state.started)
    blocks: dict[str, list[tuple[str, object]]] = {
        "server": [("redis_version", REDIS_VERSION), ("contend_version", VERSION),
                   ("redis_mode", "standalone"), ("process_id", os.getpid()),
                   ("tcp_port", config.port), ("uptime_in_seconds", uptime),
                   ("uptime_in_days", uptime // 86400)],
        "clients": [("connected_clients", state.connected_clients()),
                    ("maxclients", config.maxclients),
                    ("blocked_clients", state.blocked_clients()),
                    ("commands_in_flight", state.commands_in_flight(asking))],
        "stats": [("total_connections_received", state.total("connections_received")),
                  ("total_commands_processed", state.commands_processed()),
                  ("rejected_connections", state.total("rejected_connections")),
                  ("internal_errors", state.tally("internal_errors")),
                  ("client_output_disconnects", state.total("output_disconnects")),
                  ("preauth_refusals", state.tally("preauth_refusals")),
                  ("work_refusals", state.tally("work_refusals")),
                  ("denied_connections", state.total("denied_connections"))],
        # Redis's counts: a key past its time is counted until it is deleted.
        "keyspace": ([("db0", f"keys={keys},expires={keyspace.expiring()},avg_ttl=0")]
                     if keys else []),
        "playground": [("model", config.model), ("gil", gil()), ("parser", config.parser),
                       ("sync", config.sync),
                       ("race_window", config.race_window_mode),
                       ("race_window_us", config.race_window_us),
                       ("parked_steps", len(state.stepper.ids())),
                       ("deadlock_timeout_ms", config.deadlock_timeout_ms),
                       ("deadlocks", state.total("deadlocks")),
                       ("pool_size", pool["size"]), ("pool_in_use", pool["in-use"]),
                       ("pool_waiting", pool["waiting"]),
                       ("pool_peak_in_use", pool["peak-in-use"]),
                       ("pool_acquired_total", pool["acquired-total"]),
                       ("pool_timeouts", pool["timeouts"]),
                       ("list_waiters", len(state.waiters)),
                       *model_fields.items()],
    }
    lines: list[str] = []
    for name in DEFAULT_SECTIONS:
        if name in wanted:
            if lines:
                lines.append("")
            lines.append("# " + name.capitalize())
            lines.extend(f"{key}:{value}" for key, value in blocks[name])
    return ("\r\n".join(lines) + "\r\n").encode() if lines else b""
