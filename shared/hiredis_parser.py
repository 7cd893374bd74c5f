"""The request parser with a C fast path: hiredis's Reader where the input is plain.

`RequestParser` (resp.py) is the reference: Redis's own framing rules, written
out in Python so they can be read. It costs about 3 µs a command, which is
most of what a pipelined benchmark measures. hiredis's Reader, the C parser
redis-py uses for replies, frames the same bytes in a tenth of that. But it
reads RESP replies, a larger language than requests: it takes `+PING` and
`:5` inside an array, RESP3's sets, maps and attributes, and it waits for a
count of 2,000,000 elements where Redis answers "invalid multibulk length" at
once. So it only ever sees input that both parsers frame the same way, and
the reference takes everything else, with Redis's error texts:

* a chunk that does not start with '*', or holds a byte that starts one of
  those other types ('+', '=', '(', '~', '|'; a lone value of any other type
  comes back as something that is not bytes) or a count of seven digits, or
  arrives before AUTH, goes to the reference whole;
* what hiredis returns must be lists of bytes whose plain encoding
  (`*2\\r\\n$4\\r\\nINCR\\r\\n...`) is exactly as long as the chunk: then the
  chunk was those commands and nothing else;
* a chunk that ends inside a command (a long pipeline cut by the socket)
  gives its whole commands from hiredis and its tail to the reference, which
  hands the bytes after that command back once it is complete;
* anything hiredis refuses is parsed again, from the chunk's first byte, by
  the reference, which raises Redis's error at the same command.

A chunk with '+' or '=' in a value (base64, "a=b") is so parsed in Python:
slower, never different. The property tests in tests/test_hiredis_parser.py
check that both parsers give the same commands and the same errors for
whatever bytes, cut wherever.
"""

from __future__ import annotations

import itertools
from collections import deque

import hiredis

from contend.shared.resp import MULTIBULK_MAX, RequestParser


# Seen anywhere in a chunk, the chunk goes to the reference: a byte that starts a RESP
# type hiredis reads as bytes (or a set as a list) where a request may only have '$' bulk
# strings; or an array (map, push) of a million elements or more, which hiredis makes
# room for as soon as it reads the count, where Redis refuses past 1,048,576 at once.
def _not_for_hiredis(data: bytes) -> bool:
    seen = data.translate(_SCREEN)   # one pass in C: far cheaper than a regular expression
    return b"+" in seen or b"*0000000" in seen


# Each byte as _not_for_hiredis sees it: a digit as '0', what starts an aggregate as '*',
# what starts a type hiredis reads as bytes as '+', anything else as '.'.
_SCREEN = bytes(b"0"[0] if byte in b"0123456789" else b"*"[0] if byte in b"*%>"
                else b"+"[0] if byte in b"+=(~|" else b"."[0] for byte in range(256))

# A chunk this large could hold a command of more elements than Redis takes:
_LARGEST_CHUNK = MULTIBULK_MAX
# `$<length>\r\n<bytes>\r\n` costs len(bytes) + _BULK_COST[length] bytes (5 + its digits):
_BULK_COST = bytes(5 + len(str(n)) for n in range(100_000))


def _plain_size(command: list[bytes]) -> int:
    """Bytes of `command` as a plain multibulk (IndexError for an element of 100,000
    bytes or more)."""
    lengths = list(map(len, command))
    return sum(lengths) + sum(map(_BULK_COST.__getitem__, lengths)) + _BULK_COST[len(command)] - 2


class HiredisRequestParser:
    """RequestParser's contract (feed, next_command, buffered, max_bulk, unauthenticated)
    with hiredis doing the framing wherever it frames as Redis does."""

    __slots__ = ("_reader", "_ready", "_reference", "_catching_up", "max_bulk",
                 "unauthenticated")

    def __init__(self, max_bulk: int):
        self._reader = hiredis.Reader()
        self._ready: deque[list[bytes]] = deque()   # commands framed by hiredis, not taken yet
        self._reference = RequestParser(max_bulk)   # takes what hiredis may not
        self._catching_up = False   # the reference got bytes after a command it holds in part
        self.max_bulk = max_bulk
        self.unauthenticated = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as commands."""
        return sum(map(_plain_size, self._ready)) + self._reference.buffered

    def feed(self, data: bytes) -> None:
        reference = self._reference
        if reference.buffered:
            # It holds a command in part: these bytes finish it. Once it has, what follows
            # that command comes back here (next_command).
            self._catching_up = True
            reference.feed(data)
            return
        if (self.unauthenticated or data[:1] != b"*" or len(data) > _LARGEST_CHUNK
                or len(data) > self.max_bulk or _not_for_hiredis(data)):
            reference.feed(data)   # not plain input, or before AUTH: the reference's limits
            return
        reader = self._reader
        reader.feed(data)
        ready = self._ready
        before = len(ready)
        try:
            while (command := reader.gets()) is not False:
                if type(command) is not list:
                    raise TypeError   # a lone value, or a RESP3 push: not a request
                b"".join(command)     # TypeError unless every element is bytes
                ready.append(command)
            if not reader.has_data():
                # All of it read: were those whole commands, or is one under way? An empty
                # array comes back alone only from a reader between two commands.
                reader.feed(b"*0\r\n")
                if reader.gets() == []:
                    return   # the usual case: the chunk was these commands and nothing else
            # A command under way: the whole ones are the chunk's first `size` bytes.
            size = sum(map(_plain_size, itertools.islice(ready, before, None)))
        except (hiredis.ProtocolError, TypeError, IndexError):
            size = -1   # refused, not a request, or an element too long for _BULK_COST
        # hiredis holds part of a command, or refused something: it starts afresh next
        # time, and the reference takes what it did not frame whole.
        self._reader = hiredis.Reader()
        if 0 <= size < len(data):
            data = data[size:]
            self._catching_up = True
        else:
            for _ in range(len(ready) - before):   # the reference parses them again
                ready.pop()
        reference.feed(data)

    def next_command(self) -> list[bytes] | None:
        ready = self._ready
        while ready:
            command = ready.popleft()
            if command:   # *0 is skipped without a reply, as the reference skips it
                return command
        reference = self._reference
        reference.max_bulk, reference.unauthenticated = self.max_bulk, self.unauthenticated
        framed = reference.next_command()
        if framed is not None and self._catching_up:
            # The command cut short is whole now: the bytes after it are hiredis's again
            # (once per chunk, or a chunk of a thousand commands would be copied a thousand times).
            self._catching_up = False
            rest = reference.take_rest()
            if rest:
                self.feed(rest)
        return framed
