"""Server settings: the `contend serve` flags and CONFIG GET/SET over the same values.

Models read these attributes on every command (sync mode, race window), so a
CONFIG SET takes effect on the next command without a restart.
"""

from __future__ import annotations

import argparse
import importlib.util
import sysconfig
from dataclasses import dataclass, field

from contend.shared.args import glob_match
from contend.shared.resp import ReplyError

SYNC_MODES = ("off", "lock", "striped", "unordered")
MODEL_NAMES = ("threads", "selectors", "trio", "asyncio", "processes")
LOOPS = ("asyncio", "uvloop")   # the asyncio model's event loop: the standard one, or uvloop
RACE_WINDOW_MODES = ("timed", "step")   # race-window-us wide, or parked until released
PARSERS = ("python", "hiredis")  # how requests are framed: resp.py, or hiredis_parser.py


def default_parser() -> str:
    """hiredis where it is installed, except on a free-threaded interpreter: importing
    hiredis (3.5, which does not declare itself safe without a GIL) turns the GIL back on."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "python"
    return "hiredis" if importlib.util.find_spec("hiredis") else "python"


@dataclass
class Config:
    model: str = "threads"
    host: str = "127.0.0.1"
    port: int = 7070
    maxclients: int = 10000
    timeout: int = 0
    pool_size: int = 4
    sync: str = "lock"
    race_window_us: int = 0
    race_window_mode: str = "timed"          # RACE_WINDOW_MODES: a timed window, or step mode
    deadlock_timeout_ms: int = 1000
    requirepass: str = ""
    proto_max_bulk_len: int = 512 * 1024 * 1024
    save: str = ""
    appendonly: str = "no"
    # Hardening (docs/design.md, "Bad input"): what one client may cost.
    protected_mode: str = "yes"              # no password: refuse clients not on loopback
    work_max_units: int = 10_000             # WORK's cap: one call stays within seconds
    output_buffer_soft_limit: int = 1 << 20  # unsent bytes past which a client's commands wait
    output_buffer_hard_limit: int = 256 << 20   # unsent bytes past which it is disconnected
    output_buffer_soft_seconds: int = 60     # ... or past the soft limit this long
    loop: str = "asyncio"                    # the asyncio model: its event loop (LOOPS)
    workers: int = 0                         # the processes model: worker processes; 0 = CPUs
    parser: str = field(default_factory=default_parser)   # PARSERS: who frames requests

    @classmethod
    def from_options(cls, options: argparse.Namespace) -> Config:
        return cls(**{name: getattr(options, name) for name in cls.__dataclass_fields__
                      if hasattr(options, name)})

    @property
    def race_window(self) -> float:
        """The race window in seconds."""
        return self.race_window_us / 1_000_000

    @property
    def stepping(self) -> bool:
        """Step mode: a command parks in its race window until DEBUG.STEP RELEASE."""
        return self.race_window_mode == "step"

    @property
    def no_window(self) -> bool:
        """Commands run straight from a read to its write: no wait, no park."""
        return not self.race_window_us and self.race_window_mode != "step"

    # -- CONFIG GET / CONFIG SET -------------------------------------------

    def get(self, pattern: bytes) -> list[bytes]:
        reply = []
        for name, (attribute, _parse) in _PARAMETERS.items():
            if glob_match(pattern, name.encode(), nocase=True):
                reply += [name.encode(), _show(getattr(self, attribute))]
        for name in ("port", "bind", "model"):
            if glob_match(pattern, name.encode(), nocase=True):
                reply += [name.encode(), _show(getattr(self, "host" if name == "bind" else name))]
        for name, value in _FIXED.items():
            if glob_match(pattern, name.encode(), nocase=True):
                reply += [name.encode(), value]
        return reply

    def set(self, pairs: list[tuple[bytes, bytes]]) -> tuple[str, ...]:
        """Apply all pairs or none; returns the attribute names that changed."""
        updates = {}
        for raw_name, raw_value in pairs:
            name = raw_name.decode("utf-8", "replace").lower()
            if name in _IMMUTABLE:
                raise ReplyError(f"ERR CONFIG SET failed (possibly related to argument '{name}') "
                                 "- can't set immutable config")
            if name not in _PARAMETERS:
                raise ReplyError("ERR Unknown option or number of arguments for CONFIG SET - "
                                 f"'{name}'")
            attribute, parse = _PARAMETERS[name]
            try:
                updates[attribute] = parse(raw_value.decode("utf-8", "replace"))
            except ValueError as problem:
                raise ReplyError(f"ERR CONFIG SET failed (possibly related to argument '{name}') "
                                 f"- {problem}") from None
        for attribute, value in updates.items():
            setattr(self, attribute, value)
        return tuple(updates)


def _show(value) -> bytes:
    return str(value).encode()


def _integer(low: int, high: int = 2**63 - 1):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("argument couldn't be parsed into an integer") from None
        if not low <= value <= high:
            raise ValueError(f"argument must be between {low} and {high} inclusive")
        return value
    return parse


def _choice(*choices: str):
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError("argument(s) must be one of the following: " + ", ".join(choices))
        return text.lower()
    return parse


def _text(value: str) -> str:
    return value


def _only(allowed: str):
    """Settings contend shows for Redis clients' sake; it keeps nothing on disk."""
    def parse(text: str) -> str:
        if text.lower() != allowed:
            raise ValueError(f"contend keeps no data on disk, so only '{allowed}' is accepted")
        return allowed
    return parse


# CONFIG name -> (Config attribute, parser of the new value)
_PARAMETERS = {
    "sync": ("sync", _choice(*SYNC_MODES)),
    "race-window-us": ("race_window_us", _integer(0, 10_000_000)),
    "race-window": ("race_window_mode", _choice(*RACE_WINDOW_MODES)),
    "deadlock-timeout-ms": ("deadlock_timeout_ms", _integer(1, 3_600_000)),
    "pool-size": ("pool_size", _integer(1, 1_000_000)),
    "maxclients": ("maxclients", _integer(1, 1_000_000)),
    "timeout": ("timeout", _integer(0, 2**31 - 1)),
    "requirepass": ("requirepass", _text),
    "proto-max-bulk-len": ("proto_max_bulk_len", _integer(1024 * 1024, 2**63 - 1)),
    "protected-mode": ("protected_mode", _choice("yes", "no")),
    "work-max-units": ("work_max_units", _integer(0, 1_000_000)),
    "output-buffer-soft-limit": ("output_buffer_soft_limit", _integer(1024, 2**63 - 1)),
    "output-buffer-hard-limit": ("output_buffer_hard_limit", _integer(1024, 2**63 - 1)),
    "output-buffer-soft-seconds": ("output_buffer_soft_seconds", _integer(0, 2**31 - 1)),
    # redis-benchmark asks for these two at start-up
    "save": ("save", _only("")),
    "appendonly": ("appendonly", _only("no")),
}
_FIXED = {"databases": b"1"}
_IMMUTABLE = {"port", "bind", "model", "databases"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr, exit status 2
    (the usage text is one `--help` away, not in front of the error)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def flag(parse):
    """A CONFIG SET parser as an argparse `type`: the flag and CONFIG SET refuse the same
    values with the same words, and a bad flag is a usage error (exit 2) at parse time."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as problem:
            raise argparse.ArgumentTypeError(f"{text!r}: {problem}") from None
    return convert


def at_least(low: int):
    """An integer flag with a floor (`--clients` of race and demo: at least 1)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not an integer") from None
        if value < low:
            raise ValueError(f"must be at least {low}")
        return value
    return flag(parse)


def _setting(name: str):
    """The flag type of a CONFIG SET parameter: its parser, limits and all."""
    return flag(_PARAMETERS[name][1])


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every model takes (`contend serve` and `python -m contend serve`).
    Numbers are checked here, before anything starts: a negative race window
    would otherwise be accepted and then fail every INCR."""
    parser.add_argument("--model", choices=MODEL_NAMES, default="threads",
                        help="concurrency model (default: threads)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=flag(_integer(0, 65535)), default=7070,
                        help="port to listen on; 0 picks a free one and prints it (default: 7070)")
    parser.add_argument("--maxclients", type=_setting("maxclients"), default=10000,
                        help="connections served at once; more are refused (default: 10000)")
    parser.add_argument("--timeout", type=_setting("timeout"), default=0,
                        help="close a client idle this many seconds; 0 never (default: 0)")
    parser.add_argument("--pool-size", dest="pool_size", type=_setting("pool-size"), default=4,
                        help="leases in the POOL.* resource pool (default: 4)")
    parser.add_argument("--sync", choices=SYNC_MODES, default="lock",
                        help="how shared state is guarded (default: lock)")
    parser.add_argument("--race-window", dest="race_window_mode", choices=RACE_WINDOW_MODES,
                        default="timed", help="timed: the window is --race-window-us wide; "
                        "step: a command parks in it until DEBUG.STEP RELEASE (default: timed)")
    parser.add_argument("--race-window-us", dest="race_window_us",
                        type=_setting("race-window-us"), default=0,
                        help="microseconds between a read and its write (default: 0)")
    parser.add_argument("--deadlock-timeout-ms", dest="deadlock_timeout_ms",
                        type=_setting("deadlock-timeout-ms"),
                        default=1000, help="unordered mode gives up a lock wait after this")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio",
                        help="the asyncio model's event loop: asyncio's own, or uvloop "
                        "(pip install contend[uvloop]) (default: asyncio)")
    parser.add_argument("--workers", type=at_least(0), default=0,
                        help="the processes model: worker processes sharing the listening "
                        "socket; 0 = one per CPU (default: 0)")
    parser.add_argument("--parser", choices=PARSERS, default=default_parser(),
                        help="who frames requests: hiredis's C Reader where the input is "
                        "plain, else the Python reference (shared/hiredis_parser.py); or "
                        "python, the reference alone (default here: %(default)s)")
    parser.add_argument("--requirepass", default="", help="password clients must AUTH with")
    parser.add_argument("--protected-mode", dest="protected_mode", choices=("yes", "no"),
                        default="yes", help="with no password, refuse clients that are not "
                        "on this machine, as Redis does (default: yes)")
