"""Reading command arguments with Redis's rules and Redis's error texts."""

from __future__ import annotations

import math
import re
import time

from contend.shared.resp import ReplyError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

NOT_AN_INTEGER = "ERR value is not an integer or out of range"
OVERFLOW = "ERR increment or decrement would overflow"
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
SYNTAX = "ERR syntax error"

_INTEGER = re.compile(rb"-?[1-9][0-9]{0,19}|0")


def parse_int(text: bytes, error: str = NOT_AN_INTEGER) -> int:
    """A signed 64-bit integer as Redis's string2ll reads it: no '+', spaces or leading zeros."""
    if text.isdigit() and len(text) < 19 and (text[0] != 0x30 or len(text) == 1):
        return int(text)   # the usual counter: plain digits, well inside 64 bits
    if _INTEGER.fullmatch(text):
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    raise ReplyError(error)


# The longest wait contend times. Redis times any wait whose deadline fits in a signed
# 64-bit count of milliseconds; Python's waits stop far short of that: epoll sleeps at
# most 2**31 - 1 ms (about 24.8 days, the selectors loop's limit) and threading's waits
# raise OverflowError past threading.TIMEOUT_MAX (a BLPOP with a timeout of 1e10 once
# answered nothing and left its waiter behind, so the next push went to nobody). A
# longer timeout is accepted, as Redis accepts it, and waits forever: the difference
# shows only after 24 days.
LONGEST_WAIT = 24 * 86400   # seconds

TIMEOUT_NOT_A_FLOAT = "ERR timeout is not a float or out of range"
TIMEOUT_NEGATIVE = "ERR timeout is negative"
TIMEOUT_OUT_OF_RANGE = "ERR timeout is out of range"


def parse_timeout(text: bytes) -> float | None:
    """A blocking timeout in seconds, decimals allowed; 0 means forever (None).

    Redis 7.0's rules (timeout.c, getTimeoutFromObjectOrReply): a number as
    strtold reads it (no spaces around it; nan is none), not negative, and
    its deadline, now plus the timeout in milliseconds, must fit in a signed
    64-bit integer ('inf' and 1e16 do not)."""
    try:
        seconds = float(text)
    except ValueError:
        raise ReplyError(TIMEOUT_NOT_A_FLOAT) from None
    if math.isnan(seconds) or text != text.strip() or b"_" in text:   # float() allows those
        raise ReplyError(TIMEOUT_NOT_A_FLOAT)
    if seconds < 0:
        raise ReplyError(TIMEOUT_NEGATIVE)
    if seconds * 1000 > INT64_MAX - time.time() * 1000:
        raise ReplyError(TIMEOUT_OUT_OF_RANGE)
    if seconds > LONGEST_WAIT:
        return None
    return seconds or None


def parse_milliseconds(text: bytes) -> float:
    """SLEEP's and POOL.USE's time in ms, as seconds: a whole number up to LONGEST_WAIT.

    These are contend's own commands, and a sleep has no "forever", so a longer
    one is refused rather than stretched."""
    milliseconds = parse_int(text)
    if milliseconds < 0:
        raise ReplyError("ERR milliseconds must not be negative")
    if milliseconds > LONGEST_WAIT * 1000:
        raise ReplyError(f"ERR milliseconds must be at most {LONGEST_WAIT * 1000} (24 days)")
    return milliseconds / 1000


def parse_positive(text: bytes, what: str) -> int:
    """A count that must be at least 1 (pool-size, parties, amounts)."""
    value = parse_int(text)
    if value <= 0:
        raise ReplyError(f"ERR {what} must be positive")
    return value


def checked_add(a: int, b: int) -> int:
    result = a + b
    if not INT64_MIN <= result <= INT64_MAX:
        raise ReplyError(OVERFLOW)
    return result


def wrong_arity(name: bytes | str) -> ReplyError:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return ReplyError(f"ERR wrong number of arguments for '{name.lower()}' command")


def glob_match(pattern: bytes, text: bytes, nocase: bool = False) -> bool:
    """Redis's stringmatchlen: * ? [abc] [^a] [a-z] and backslash escapes."""
    return _compile_glob(pattern, nocase).fullmatch(text) is not None


_glob_cache: dict[tuple[bytes, bool], re.Pattern] = {}


def _compile_glob(pattern: bytes, nocase: bool) -> re.Pattern:
    cached = _glob_cache.get((pattern, nocase))
    if cached is not None:
        return cached
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i:i + 1]
        if c == b"*":
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i:i + 1]))
        elif c == b"[":
            i += 1
            negate = pattern[i:i + 1] == b"^"
            if negate:
                i += 1
            members = []
            while i < n and pattern[i:i + 1] != b"]":
                if pattern[i:i + 1] == b"\\" and i + 1 < n:
                    i += 1
                    members.append(re.escape(pattern[i:i + 1]))
                elif pattern[i + 1:i + 2] == b"-" and i + 2 < n and pattern[i + 2:i + 3] != b"]":
                    low, high = sorted((pattern[i:i + 1], pattern[i + 2:i + 3]))
                    members.append(re.escape(low) + b"-" + re.escape(high))
                    i += 2
                else:
                    members.append(re.escape(pattern[i:i + 1]))
                i += 1
            body = b"".join(members)
            if not body:
                out.append(b"[^\\s\\S]" if not negate else b"[\\s\\S]")
            else:
                out.append(b"[" + (b"^" if negate else b"") + body + b"]")
        else:
            out.append(re.escape(c))
        i += 1
    compiled = re.compile(b"".join(out), re.DOTALL | (re.IGNORECASE if nocase else 0))
    if len(_glob_cache) < 256:
        _glob_cache[(pattern, nocase)] = compiled
    return compiled
