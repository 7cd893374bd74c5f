"""Requests in, RESP2 or RESP3 replies out: the wire protocol with no sockets.

`RequestParser` is fed whatever bytes arrived, in whatever chunks, and hands
back one command (a list of bytes) at a time, or raises `ProtocolError` with
Redis's own text. `encode` turns a handler's Python value into reply bytes in
the protocol the client chose (RESP2 until it sends HELLO 3). `ReplyParser`
is the client's side: every RESP2 and RESP3 reply back into Python values.
The caller owns the socket; this module never waits for anything.
"""

from __future__ import annotations

import re

INLINE_MAX = 64 * 1024           # Redis's PROTO_INLINE_MAX_SIZE
MULTIBULK_MAX = 1024 * 1024      # largest element count Redis accepts
BULK_MAX_DEFAULT = 512 * 1024 * 1024  # proto-max-bulk-len's default
# Before AUTH (requirepass set), Redis 7.0 takes only small requests, and refuses a
# larger one at its header, so a stranger cannot make the server hold megabytes:
PREAUTH_MULTIBULK_MAX = 10       # elements in a multibulk
PREAUTH_BULK_MAX = 16 * 1024     # bytes in one element


class ProtocolError(Exception):
    """The request cannot be framed; the server replies `reply` and closes.

    `preauth` is True when it broke only the limits on a client that has not
    authenticated (INFO counts those as preauth_refusals).
    """

    def __init__(self, message: str, preauth: bool = False):
        super().__init__(message)
        self.reply = b"-ERR Protocol error: " + message.encode() + b"\r\n"
        self.preauth = preauth


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

    A command that arrives over many reads is parsed once, not again from its
    start on every read: the parser keeps its place inside a multibulk (the
    elements so far, how many are still to come, the length of the one whose
    bytes it awaits), as networking.c keeps `argv`, `multibulklen` and
    `bulklen`. So the work is linear in the bytes received however they are
    cut: a 7 MB RPUSH of a million elements is parsed in under a second, where
    parsing it again on every read would take minutes.
    """

    __slots__ = ("_buf", "_pos", "_searched", "_args", "_args_left", "_bulk_len",
                 "_args_size", "max_bulk", "unauthenticated")

    def __init__(self, max_bulk: int = BULK_MAX_DEFAULT):
        self._buf: bytes | bytearray = b""
        self._pos = 0            # where the bytes not parsed yet start
        self._searched = 0       # of a line cut short at _pos, the bytes searched already
                                 # for its end: a long line is not searched again per read
        # A multibulk whose bytes have not all arrived yet:
        self._args: list[bytes] = []   # its elements so far (Redis: argv)
        self._args_left = 0      # elements still to come; 0: none in progress (multibulklen)
        self._bulk_len = -1      # the next element's length once its header is read (bulklen)
        self._args_size = 0      # bytes of it parsed already, still counted as `buffered`
        self.max_bulk = max_bulk
        self.unauthenticated = False   # set by the session: before AUTH, tighter limits apply

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
        return len(self._buf) - self._pos + self._args_size

    def take_rest(self) -> bytes:
        """Between two commands, the bytes not parsed yet, given up (to hiredis_parser's
        fast path); b"" in the middle of a command, whose bytes stay here."""
        if self._args_left or self._searched or self._pos >= len(self._buf):
            return b""
        rest = bytes(self._buf[self._pos:])
        self._buf, self._pos = b"", 0
        return rest

    def next_command(self) -> list[bytes] | None:
        while self._pos < len(self._buf) or self._args_left:
            # '*' starts a multibulk array (or one is under way); anything else is inline
            if self._args_left or self._buf[self._pos] == 0x2A:
                command = self._multibulk()
            else:
                command = self._inline()
            if command is None:
                return None
            if command:  # empty line, *0 and *-N are skipped without a reply
                return command
        return None

    def _cut_short(self, pos: int, too_big: str) -> int:
        """The line at pos has not all arrived (or, as C's strchr sees it, a NUL hides
        its end): refused past 64 KiB, else how much of it the next read need not search."""
        unparsed = len(self._buf) - pos
        if unparsed > INLINE_MAX:
            raise ProtocolError(too_big)
        return unparsed - 1   # the last byte may be a '\r' whose '\n' is still to come

    def _hidden_by_nul(self, pos: int, newline: int) -> bool:
        return self._buf.find(b"\0", pos, newline) >= 0

    # -- inline: "SET k v\r\n", Redis quoting rules ---------------------------

    def _inline(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        searched = self._searched
        newline = buf.find(b"\n", pos + searched)
        if newline < 0 or buf.find(b"\0", pos, newline) >= 0:   # strchr: a NUL ends the search
            self._searched = self._cut_short(pos, "too big inline request")
            return None
        end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
        line = bytes(buf[pos:end])
        self._pos = newline + 1
        if searched:
            self._searched = 0
        return split_inline(line)

    # -- multibulk: "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n" -------------------------
    #
    # The hot path of every benchmark, so it avoids copies and helper calls:
    # plain digits pass with isdigit (only other counts go through the regex),
    # and the strchr-like NUL rule is only looked at when a header is already
    # known to be bad.

    def _multibulk(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        size = len(buf)
        searched = self._searched
        left = self._args_left
        if not left:
            # A new multibulk: its header, "*2\r\n".
            newline = buf.find(b"\r", pos + searched)
            if newline < 0 or newline + 1 >= size:
                self._searched = self._cut_short(pos, "too big mbulk count string")
                return None
            digits = buf[pos + 1:newline]
            # string2ll's rules; plain digits without a leading zero (the usual count) pass
            # without the regex, which also takes 0 and negative counts (ignored, as in Redis).
            if (not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1)) \
                    and _INTEGER(digits) is None:
                if self._hidden_by_nul(pos, newline):
                    self._searched = self._cut_short(pos, "too big mbulk count string")
                    return None
                raise ProtocolError("invalid multibulk length")
            left = int(digits)
            if left > MULTIBULK_MAX:
                raise ProtocolError("invalid multibulk length")
            if left > PREAUTH_MULTIBULK_MAX and self.unauthenticated:
                raise ProtocolError("unauthenticated multibulk length", preauth=True)
            pos, searched = newline + 2, 0
            if left <= 0:
                self._pos, self._searched = pos, 0
                return []
            args, length = [], -1
        else:
            # One under way: carry on where the last read stopped.
            args, length = self._args, self._bulk_len
        # Its elements, each "$4\r\nECHO\r\n".
        while left:
            if length < 0:
                # The element's header, "$4\r\n".
                if pos >= size:
                    break
                newline = buf.find(b"\r", pos + searched)
                if newline < 0 or newline + 1 >= size:
                    searched = self._cut_short(pos, "too big bulk count string")
                    break
                if buf[pos] != 0x24:  # '$'
                    if self._hidden_by_nul(pos, newline):
                        searched = self._cut_short(pos, "too big bulk count string")
                        break
                    got = chr(buf[pos]) if 0x20 <= buf[pos] < 0x7F else f"\\x{buf[pos]:02x}"
                    raise ProtocolError(f"expected '$', got '{got}'")
                digits = buf[pos + 1:newline]
                # A length is never negative, so plain digits without a leading zero will do.
                if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
                    if self._hidden_by_nul(pos, newline):
                        searched = self._cut_short(pos, "too big bulk count string")
                        break
                    raise ProtocolError("invalid bulk length")
                length = int(digits)
                if length > self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                if length > PREAUTH_BULK_MAX and self.unauthenticated:
                    # Refused at its header: the bytes it announces are never waited for.
                    raise ProtocolError("unauthenticated bulk length", preauth=True)
                pos, searched = newline + 2, 0
            # The element's bytes, then a CRLF that Redis skips without checking it. (A slice
            # of the bytearray that holds a cut-short command is a bytearray: made bytes here.)
            end = pos + length
            if end + 2 > size:
                break
            element = buf[pos:end]
            args.append(element if type(element) is bytes else bytes(element))
            pos, length, left = end + 2, -1, left - 1
        if left:
            # Not all here yet: remember where we stand, and carry on from there next time.
            self._args, self._args_left, self._bulk_len = args, left, length
            self._args_size += pos - self._pos
            self._pos, self._searched = pos, searched
            return None
        if self._args_left or self._searched:   # it had been cut short: nothing is under way now
            self._args, self._args_left, self._args_size, self._searched = [], 0, 0, 0
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
#
# A handler returns plain Python values; `encode` writes them in the protocol
# its client chose with HELLO. RESP3 gave Redis's replies types (a map, a
# set, a double, a verbatim text); a RESP2 client gets the same reply in the
# shapes RESP2 has, exactly as Redis sends it, so it never sees a RESP3 type.
#
#   handler returns     RESP2                     RESP3
#   bytes               $3\r\nfoo                 the same
#   int                 :42                       the same
#   str (a status)      +OK                       the same
#   list / tuple        *N, then each item        the same
#   ReplyError          -ERR ...                  the same
#   None                $-1   (a null bulk)       _
#   NULL_ARRAY          *-1   (a null array)      _
#   dict                *2N: field, value, ...    %N  (a map)
#   set / frozenset     *N                        ~N  (a set)
#   float               $18\r\n1.1000000000000001  ,1.1000000000000001  (%.17g, as Redis 7.0)
#   Verbatim            $N, the text              =N\r\ntxt:the text
#
# A Python bool is an integer, :1 or :0, in both: Redis 7.0 sends RESP3's
# boolean (#t) for none of contend's commands (EXISTS and friends answer
# integers in RESP3 too).

OK = b"+OK\r\n"


class Verbatim(bytes):
    """Text for a person to read (INFO, CLIENT LIST): RESP3 sends it with its
    format (`txt`, or `mkd` for markdown), RESP2 as a plain bulk string."""

    format: str   # three letters: "txt", or "mkd" for markdown

    def __new__(cls, text: bytes, format: str = "txt") -> Verbatim:
        self = super().__new__(cls, text)
        self.format = format
        return self

    def __repr__(self) -> str:
        return f"Verbatim({bytes(self)!r}, {self.format!r})"


def encode(value, protocol: int = 2) -> bytes:
    """Turn a handler's result into reply bytes, RESP2 or RESP3 (the table above).

    Lists may nest, and hold any of the other values. The commonest replies
    (a bulk string, an integer, +OK) return before anything else is looked at.
    """
    kind = type(value)
    if kind is bytes:
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if kind is int:
        return b":%d\r\n" % value
    if kind is str:
        return OK if value == "OK" else b"+" + value.encode() + b"\r\n"
    if value is None:
        return b"$-1\r\n" if protocol == 2 else b"_\r\n"
    out: list[bytes] = []
    _encode_into(value, out, protocol)
    return b"".join(out)


def _encode_into(value, out: list[bytes], protocol: int) -> None:
    kind = type(value)
    if kind is bytes:
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    elif kind is int:
        out.append(b":%d\r\n" % value)
    elif value is None:
        out.append(b"$-1\r\n" if protocol == 2 else b"_\r\n")
    elif kind is str or kind is Simple:
        out.append(OK if value == "OK" else b"+" + value.encode() + b"\r\n")
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            if type(item) is bytes:   # LRANGE, MGET: the bulk strings of an array, inline
                out.append(b"$%d\r\n%s\r\n" % (len(item), item))
            else:
                _encode_into(item, out, protocol)
    elif kind is bool:
        out.append(b":1\r\n" if value else b":0\r\n")
    elif value is NULL_ARRAY:
        out.append(b"*-1\r\n" if protocol == 2 else b"_\r\n")
    elif value is NO_REPLY:
        pass
    elif isinstance(value, ReplyError):
        out.append(b"-" + value.text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n")
    elif kind is dict:
        out.append(b"*%d\r\n" % (2 * len(value)) if protocol == 2 else b"%%%d\r\n" % len(value))
        for field, item in value.items():
            _encode_into(field, out, protocol)
            _encode_into(item, out, protocol)
    elif kind is set or kind is frozenset:
        out.append((b"*%d\r\n" if protocol == 2 else b"~%d\r\n") % len(value))
        for item in value:
            _encode_into(item, out, protocol)
    elif kind is float:
        text = b"%.17g" % value   # Redis 7.0's format: 1.1000000000000001, 2, inf, -inf
        out.append(b"$%d\r\n%s\r\n" % (len(text), text) if protocol == 2 else b",%s\r\n" % text)
    elif kind is Verbatim:
        if protocol == 2:
            out.append(b"$%d\r\n%s\r\n" % (len(value), value))
        else:
            out.append(b"=%d\r\n%s:%s\r\n" % (len(value) + 4, value.format.encode(), value))
    elif isinstance(value, (bytearray, memoryview)):
        _encode_into(bytes(value), out, protocol)
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


class Push(list):
    """A RESP3 push (`>`): data the server sends unasked (pub/sub, invalidations)."""


def _hashable(value):
    """A map's key or a set's member as Python can hold it: arrays become tuples."""
    if type(value) is list:
        return tuple(_hashable(item) for item in value)
    return value


class ReplyParser:
    """Splits a byte stream of RESP2 or RESP3 replies; for load clients and tests.

    `next_reply` returns the next reply, or NEED_MORE:

        +status -> str            -error, !blob error -> a ReplyError instance
        :int, (big number -> int  $bulk -> bytes          *array -> list
        $-1 -> None               *-1 -> NULL_ARRAY       _ (RESP3 null) -> None
        %map -> dict              ~set -> set             ,double -> float
        #t/#f -> True/False       =verbatim -> Verbatim (bytes, equal to its text)
        >push -> Push (a list)    |attribute: skipped, the reply it annotates is returned

    Arrays inside a map's keys or a set's members become tuples, so they can be held.
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

    def _blob(self, after: int, length: int) -> tuple[bytes, int]:
        """`length` bytes at `after`, and where the next reply starts."""
        if len(self._buf) < after + length + 2:
            raise IndexError
        return bytes(self._buf[after:after + length]), after + length + 2

    def _items(self, after: int, count: int) -> tuple[list, int]:
        items = []
        for _ in range(count):
            item, after = self._parse(after)
            items.append(item)
        return items, after

    def _parse(self, pos: int):
        buf = self._buf
        newline = buf.find(b"\r\n", pos)
        if newline < 0:
            raise IndexError
        kind, line, after = buf[pos], bytes(buf[pos + 1:newline]), newline + 2
        # RESP2's five first, the commonest first
        if kind == 0x24:   # $ bulk string
            length = int(line)
            if length < 0:
                return None, after
            return self._blob(after, length)
        if kind == 0x2B:   # + status
            return line.decode(), after
        if kind == 0x3A:   # : integer
            return int(line), after
        if kind == 0x2A:   # * array
            count = int(line)
            if count < 0:
                return NULL_ARRAY, after
            return self._items(after, count)
        if kind == 0x2D:   # - error
            return ReplyError(line.decode("utf-8", "replace")), after
        # RESP3's
        if kind == 0x5F:   # _ null
            return None, after
        if kind == 0x25:   # % map
            flat, after = self._items(after, 2 * int(line))
            return {_hashable(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}, after
        if kind == 0x7E:   # ~ set
            items, after = self._items(after, int(line))
            return {_hashable(item) for item in items}, after
        if kind == 0x2C:   # , double: 1.5, inf, -inf, nan
            return float(line), after
        if kind == 0x23:   # # boolean
            return line == b"t", after
        if kind == 0x3D:   # = verbatim string: "txt:" and the text
            text, after = self._blob(after, int(line))
            return Verbatim(text[4:], text[:3].decode()), after
        if kind == 0x28:   # ( big number
            return int(line), after
        if kind == 0x21:   # ! blob error
            text, after = self._blob(after, int(line))
            return ReplyError(text.decode("utf-8", "replace")), after
        if kind == 0x3E:   # > push
            items, after = self._items(after, int(line))
            return Push(items), after
        if kind == 0x7C:   # | attribute: a map about the next reply, which is what we return
            _, after = self._items(after, 2 * int(line))
            return self._parse(after)
        raise ValueError(f"not a RESP reply: {bytes(buf[pos:pos + 20])!r}")
