"""RESP2 requests in, RESP2 replies out: the wire protocol with no sockets.

`RequestParser` is fed whatever bytes arrived, in whatever chunks, and hands
back one command (a list of bytes) at a time, or raises `ProtocolError` with
Redis's own text. `encode` turns a handler's Python value into reply bytes.
The caller owns the socket; this module never waits for anything.
"""

from __future__ import annotations

import re

INLINE_MAX = 64 * 1024           # Redis's PROTO_INLINE_MAX_SIZE
MULTIBULK_MAX = 1024 * 1024      # largest element count Redis accepts
BULK_MAX_DEFAULT = 512 * 1024 * 1024  # proto-max-bulk-len's default


class ProtocolError(Exception):
    """The request cannot be framed; the server replies `reply` and closes."""

    def __init__(self, message: str):
        super().__init__(message)
        self.reply = b"-ERR Protocol error: " + message.encode() + b"\r\n"


class Simple(str):
    """A status reply (`+OK`); a plain `str` from a handler means the same."""


class NullArray:
    """`*-1`: what BLPOP and friends answer on timeout."""

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = NullArray()
NO_REPLY = object()   # SHUTDOWN: Redis closes the connection without answering


class ReplyError(Exception):
    """A command's error reply; the text starts with its code (ERR, WRONGTYPE, ...)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class RequestParser:
    """Splits a byte stream into commands exactly as Redis's networking.c does.

    Feed bytes with `feed`; call `next_command` until it returns None (it needs
    more bytes). A parse error raises `ProtocolError`; after that the parser is
    spent, because Redis closes such a connection rather than guess where the
    next command starts.
    """

    __slots__ = ("_buf", "_pos", "max_bulk")

    def __init__(self, max_bulk: int = BULK_MAX_DEFAULT):
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self.max_bulk = max_bulk

    def feed(self, data: bytes) -> None:
        if type(data) is not bytes:
            data = bytes(data)   # we may keep it as it is, so it must not change under us
        if self._pos >= len(self._buf):
            # Everything before was consumed (the usual case): parse the new bytes where they lie.
            self._buf, self._pos = data, 0
            return
        if type(self._buf) is not bytearray or self._pos:
            # Keep only the unparsed tail, in a buffer that grows without copying it all each time.
            self._buf, self._pos = bytearray(self._buf[self._pos:]), 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into commands."""
        return len(self._buf) - self._pos

    def next_command(self) -> list[bytes] | None:
        while self._pos < len(self._buf):
            # '*' starts a multibulk array; anything else is an inline command
            command = self._multibulk() if self._buf[self._pos] == 0x2A else self._inline()
            if command is None:
                return None
            if command:  # empty line, *0 and *-N are skipped without a reply
                return command
        return None

    def _line_end(self, pos: int, char: bytes) -> int:
        """Index of `char` at or after pos, or -1; like C's strchr, a NUL stops the search."""
        found = self._buf.find(char, pos)
        if found >= 0 and self._buf.find(b"\0", pos, found) >= 0:
            return -1
        return found

    # -- inline: "SET k v\r\n", Redis quoting rules ---------------------------

    def _inline(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        newline = self._line_end(pos, b"\n")
        if newline < 0:
            if len(buf) - pos > INLINE_MAX:
                raise ProtocolError("too big inline request")
            return None
        end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
        line = bytes(buf[pos:end])
        self._pos = newline + 1
        return split_inline(line)

    # -- multibulk: "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" -------------------------
    #
    # The hot path of every benchmark, so it avoids copies and helper calls:
    # integers are checked in place with one regex, and the strchr-like NUL
    # rule is only looked at when a header is already known to be bad.

    def _incomplete(self, pos: int, too_big: str) -> None:
        """The header at pos has not all arrived (or, as strchr sees it, a NUL hides its end)."""
        if len(self._buf) - pos > INLINE_MAX:
            raise ProtocolError(too_big)

    def _hidden_by_nul(self, pos: int, newline: int) -> bool:
        return self._buf.find(b"\0", pos, newline) >= 0

    def _multibulk(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        size = len(buf)
        newline = buf.find(b"\r", pos)
        if newline < 0 or newline + 1 >= size:
            self._incomplete(pos, "too big mbulk count string")
            return None
        if _INTEGER(buf, pos + 1, newline) is None:
            if self._hidden_by_nul(pos, newline):
                self._incomplete(pos, "too big mbulk count string")
                return None
            raise ProtocolError("invalid multibulk length")
        count = int(buf[pos + 1:newline])
        if count > MULTIBULK_MAX:
            raise ProtocolError("invalid multibulk length")
        pos = newline + 2
        if count <= 0:
            self._pos = pos
            return []
        args = []
        # A command is only taken once all its elements are here, so a partial
        # command leaves _pos untouched and is parsed again from its start.
        for _ in range(count):
            if pos >= size:
                return None
            newline = buf.find(b"\r", pos)
            if newline < 0 or newline + 1 >= size:
                self._incomplete(pos, "too big bulk count string")
                return None
            if buf[pos] != 0x24:  # '$'
                if self._hidden_by_nul(pos, newline):
                    self._incomplete(pos, "too big bulk count string")
                    return None
                got = chr(buf[pos]) if 0x20 <= buf[pos] < 0x7F else f"\\x{buf[pos]:02x}"
                raise ProtocolError(f"expected '$', got '{got}'")
            digits = buf[pos + 1:newline]
            # A length is never negative, so plain digits without a leading zero will do.
            if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
                if self._hidden_by_nul(pos, newline):
                    self._incomplete(pos, "too big bulk count string")
                    return None
                raise ProtocolError("invalid bulk length")
            length = int(digits)
            if length > self.max_bulk:
                raise ProtocolError("invalid bulk length")
            start = newline + 2
            pos = start + length + 2  # Redis skips the CRLF without checking it
            if size < pos:
                return None
            args.append(bytes(buf[start:start + length]))
        self._pos = pos
        return args


# string2ll's rules: optional '-', digits, no leading zeros, no '+', no spaces, not "-0".
_INTEGER = re.compile(rb"-?[1-9][0-9]{0,19}|0").fullmatch


_ESCAPES = {ord("n"): 0x0A, ord("r"): 0x0D, ord("t"): 0x09, ord("b"): 0x08, ord("a"): 0x07}
_HEX = b"0123456789abcdefABCDEF"
_BLANK = b" \n\r\t\x0b\x0c"


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command the way Redis's sdssplitargs does.

    Double quotes allow \\n, \\r, \\t, \\b, \\a and \\xHH escapes; single
    quotes allow only \\'. A closing quote must be followed by a blank or the
    end of the line. A NUL byte ends the line, as it ends a C string.
    """
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _BLANK:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            c = line[i] if i < n else None
            if in_double:
                if (c == 0x5C and i + 3 < n and line[i + 1] == 0x78
                        and line[i + 2] in _HEX and line[i + 3] in _HEX):
                    current.append(int(line[i + 2:i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _BLANK:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                elif c is None:
                    raise ProtocolError("unbalanced quotes in request")
                else:
                    current.append(c)
            elif in_single:
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _BLANK:
                        raise ProtocolError("unbalanced quotes in request")
                    i += 1
                    break
                elif c is None:
                    raise ProtocolError("unbalanced quotes in request")
                else:
                    current.append(c)
            elif c is None or c in b" \n\r\t":
                break
            elif c == 0x22:
                in_double = True
            elif c == 0x27:
                in_single = True
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


# -- replies -----------------------------------------------------------------

OK = b"+OK\r\n"


def encode(value, protocol: int = 2) -> bytes:
    """Turn a handler's result into RESP2 bytes.

    bytes -> bulk, int -> integer, None -> null bulk, str -> status,
    list/tuple -> array (nested allowed), NULL_ARRAY -> *-1,
    ReplyError -> error.
    """
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def _encode_into(value, out: list[bytes]) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    elif kind is int:
        out.append(b":%d\r\n" % value)
    elif value is None:
        out.append(b"$-1\r\n")
    elif kind is str or kind is Simple:
        out.append(OK if value == "OK" else b"+" + value.encode() + b"\r\n")
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, out)
    elif kind is bool:
        out.append(b":1\r\n" if value else b":0\r\n")
    elif value is NULL_ARRAY:
        out.append(b"*-1\r\n")
    elif value is NO_REPLY:
        pass
    elif isinstance(value, ReplyError):
        out.append(b"-" + value.text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n")
    elif isinstance(value, (bytearray, memoryview)):
        _encode_into(bytes(value), out)
    else:
        raise TypeError(f"cannot encode {kind.__name__} as a reply")


# -- the client side: commands out, replies in ---------------------------------

def encode_command(*args) -> bytes:
    """A command as a multibulk array; str and int arguments are sent as their text."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


NEED_MORE = object()


class ReplyParser:
    """Splits a byte stream of RESP2 replies; for load clients and tests.

    `next_reply` returns the next reply (bytes, int, str for a status, None,
    NULL_ARRAY, a list, or a ReplyError instance), or NEED_MORE.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self):
        try:
            value, pos = self._parse(self._pos)
        except IndexError:
            return NEED_MORE
        self._pos = pos
        return value

    def _parse(self, pos: int):
        buf = self._buf
        newline = buf.find(b"\r\n", pos)
        if newline < 0:
            raise IndexError
        kind, line, after = buf[pos], bytes(buf[pos + 1:newline]), newline + 2
        if kind == 0x2B:   # +
            return line.decode(), after
        if kind == 0x2D:   # -
            return ReplyError(line.decode("utf-8", "replace")), after
        if kind == 0x3A:   # :
            return int(line), after
        if kind == 0x24:   # $
            length = int(line)
            if length < 0:
                return None, after
            if len(buf) < after + length + 2:
                raise IndexError
            return bytes(buf[after:after + length]), after + length + 2
        if kind == 0x2A:   # *
            count = int(line)
            if count < 0:
                return NULL_ARRAY, after
            items = []
            for _ in range(count):
                item, after = self._parse(after)
                items.append(item)
            return items, after
        raise ValueError(f"not a RESP2 reply: {bytes(buf[pos:pos + 20])!r}")
