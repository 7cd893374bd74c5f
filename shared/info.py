"""INFO's text: Redis's sections, plus one for the playground."""

from __future__ import annotations

import os
import time

from contend.shared.state import REDIS_VERSION, VERSION, ServerState

DEFAULT_SECTIONS = ("server", "clients", "stats", "keyspace", "playground")


def render_info(state: ServerState, model_fields: dict, sections: list[str], asking=None) -> bytes:
    """INFO's text; `asking` (the client running INFO) is not counted as a command in flight."""
    wanted = set(sections) or {"default"}
    if wanted & {"all", "everything", "default"}:
        wanted = set(DEFAULT_SECTIONS)
    config, ledger, keyspace = state.config, state.ledger, state.keyspace
    uptime = int(time.time() - state.started)
    clients = list(state.clients.values())
    blocks: dict[str, list[tuple[str, object]]] = {
        "server": [("redis_version", REDIS_VERSION), ("contend_version", VERSION),
                   ("redis_mode", "standalone"), ("process_id", os.getpid()),
                   ("tcp_port", config.port), ("uptime_in_seconds", uptime),
                   ("uptime_in_days", uptime // 86400)],
        "clients": [("connected_clients", len(clients)), ("maxclients", config.maxclients),
                    ("blocked_clients", sum(1 for c in clients if c.blocked)),
                    ("commands_in_flight",
                     sum(1 for c in clients if c.running and c is not asking))],
        "stats": [("total_connections_received", state.stats.connections_received),
                  ("total_commands_processed", state.commands_processed()),
                  ("rejected_connections", state.stats.rejected_connections),
                  ("internal_errors", state.tally("internal_errors")),
                  ("client_output_disconnects", state.stats.output_disconnects),
                  ("preauth_refusals", state.tally("preauth_refusals")),
                  ("work_refusals", state.tally("work_refusals")),
                  ("denied_connections", state.stats.denied_connections)],
        # Redis's counts: a key past its time is counted until it is deleted.
        "keyspace": ([("db0", f"keys={keyspace.size()},expires={len(keyspace.expires)},"
                              "avg_ttl=0")] if keyspace.size() else []),
        "playground": [("model", config.model), ("sync", config.sync),
                       ("race_window_us", config.race_window_us),
                       ("deadlock_timeout_ms", config.deadlock_timeout_ms),
                       ("deadlocks", state.stats.deadlocks),
                       ("pool_size", ledger.size), ("pool_in_use", ledger.in_use),
                       ("pool_waiting", ledger.waiting), ("pool_peak_in_use", ledger.peak_in_use),
                       ("pool_acquired_total", ledger.acquired_total),
                       ("pool_timeouts", ledger.timeouts),
                       ("list_waiters", state.waiters.count),
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
