"""One connection's protocol, with no I/O: bytes in, commands out, replies in, bytes out.

This is h11's shape. The model owns the socket and the waiting; the session
owns everything else a connection's life means, once for every model:

    framing       Redis's parser; a protocol error is answered, then the connection closes
    QUIT          answered, then closed (SHUTDOWN: closed without an answer)
    ordering      a blocking command runs only after the replies before it are sent
    back-pressure past output-buffer-soft-limit unsent bytes, no more commands until they are
                  sent; past output-buffer-hard-limit, or a FLUSH unsent for
                  output-buffer-soft-seconds, the client is closed (Redis's
                  client-output-buffer-limit)
    hand-back     an item a push handed to a BLPOP whose client has left goes back, never lost
    leases        a client that leaves gives back every lease it holds
    MULTI         between MULTI and EXEC, commands are queued, or refused (dooming the EXEC);
                  a client that leaves forgets its WATCHes
    bugs          a command that raises answers `-ERR internal error`; the traceback is logged
                  once per kind of failure, INFO counts them all, the server keeps serving

A model's read loop is only this (threads.py, selector_loop.py and trio_server.py
each write it with their own way of waiting):

    while (event := session.next_event()) is not CLOSE:
        if event is NEED_DATA:    session.receive_data(recv())     # b"": the client left
        elif event is FLUSH:      send(session.data_to_send()) within session.flush_timeout,
                                  or else session.flush_timed_out()
        else:                     drive the Call: perform each effect it yields
    send(session.data_to_send()) as a FLUSH; close the socket; session.close()

After `connection_lost()` (or b"" received) the session asks for no more I/O:
only the Calls that clean up (hand-back, lease return, unwatch), then CLOSE.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Generator, Sequence
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from contend.shared.commands import BLOCKING, Command, lookup, run
from contend.shared.commands.lists import Handed, hand_back_steps
from contend.shared.commands.pool import return_leases_steps
from contend.shared.commands.transactions import (
    QUEUED,
    RUN_AT_ONCE,
    queue_refusal,
    refused,
    unwatch_steps,
)
from contend.shared.effects import ALL_KEYS, Effect, Guard, PopWait, RaceWindow
from contend.shared.guards import Step, lock_plan
from contend.shared.resp import NO_REPLY, ProtocolError, ReplyError, RequestParser, encode
from contend.shared.state import ServerState, Transaction
from contend.shared.stepping import describe

if TYPE_CHECKING:
    from contend.shared.config import Config
    from contend.shared.hiredis_parser import HiredisRequestParser

log = logging.getLogger("contend")

INTERNAL_ERROR = "ERR internal error"


class Event:
    """What a session asks its model to do next, when that is not running a Call."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Event("NEED_DATA")   # receive bytes (b"" when the client has gone) and ask again
FLUSH = Event("FLUSH")           # send data_to_send() before asking again
CLOSE = Event("CLOSE")           # send data_to_send(), close the socket, then session.close()

_NOTHING = frozenset[bytes]()    # a Call that holds no guard
_EVERY_KEY = object()            # a Call that holds the whole keyspace
_WHOLE_KEYSPACE = Guard(ALL_KEYS)


def request_parser(config: Config) -> RequestParser | HiredisRequestParser:
    """A connection's parser: the one `--parser` chose (INFO playground says which)."""
    if config.parser == "hiredis":
        # Imported only when chosen: on a free-threaded interpreter, importing hiredis
        # would turn the GIL back on for the whole server.
        from contend.shared.hiredis_parser import HiredisRequestParser
        return HiredisRequestParser(config.proto_max_bulk_len)
    return RequestParser(config.proto_max_bulk_len)


class Session:
    """The protocol state of one connection; see the module docstring for the loop."""

    def __init__(self, state: ServerState, addr: str = "", laddr: str = ""):
        self.state = state
        self.client = state.connect(addr, laddr)
        self.parser = request_parser(state.config)
        self.call: Call | None = None      # the command in flight, driven by the model
        self.out_size = 0                  # unsent reply bytes: the back-pressure gauge
        self.peer_gone = False             # the client hung up: nothing more is sent or run
        self.over_output_limit = False     # closed for its unsent replies: counted at close()
        self.closed = False
        self._out: list[bytes] = []
        self._held_back: list[bytes] | None = None   # a blocking command waiting for a FLUSH
        self._hand_back: Handed | None = None        # an item to return, once the client is gone
        self._leases_returned = False
        self._unwatched = False
        denial = state.denial(addr)   # protected mode: answered, then closed
        if denial is not None:
            self._send(denial)
            self.client.closing = True

    # -- bytes in ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" means it closed its end."""
        if not data:
            self.connection_lost()
        elif not self.peer_gone:
            parser = self.parser
            parser.max_bulk = self.state.config.proto_max_bulk_len   # CONFIG SET applies
            parser.unauthenticated = not self.client.authenticated   # so do preauth limits
            parser.feed(data)

    def connection_lost(self) -> None:
        """The client is gone (end of file, a reset, a failed send): send it nothing more."""
        self.peer_gone = True
        self._out.clear()
        self.out_size = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet run: what a model bounds while a command waits."""
        return self.parser.buffered

    # -- commands out ----------------------------------------------------------------

    def next_event(self) -> Event | Call:
        """What the model does next: run a Call, or NEED_DATA, FLUSH, CLOSE."""
        if self.call is not None:
            raise RuntimeError("the running Call has not ended")
        client, state, parser = self.client, self.state, self.parser
        while not (self.peer_gone or client.closing):
            chore = state.due_chore()   # server upkeep (active expiry), on this turn
            if chore is not None:
                # In the server's mode now, not this client's last command's: its guard
                # must exclude every command in flight.
                client.sync = state.config.sync
                self.call = Call(self, chore, b"chore")
                return self.call
            if self.out_size >= state.config.output_buffer_soft_limit:
                return FLUSH   # the client reads slower than it sends: let it catch up first
            argv = self._held_back
            if argv is not None:
                self._held_back = None
            else:
                try:
                    # Before AUTH, Redis refuses large requests at their headers.
                    parser.unauthenticated = not client.authenticated
                    argv = parser.next_command()
                except ProtocolError as error:
                    if error.preauth:   # too large for a client that has not authenticated
                        client.preauth_refusals += 1
                    self._send(error.reply)
                    # Redis replies, then closes: the stream has no frame boundary left
                    client.closing = True
                    break
                if argv is None:
                    return NEED_DATA
                if self._out and argv[0].lower() in BLOCKING and client.transaction is None:
                    self._held_back = argv   # earlier replies go out before it may wait for long
                    return FLUSH
            try:
                command = lookup(client, argv)
                transaction = client.transaction
                if isinstance(command, ReplyError):
                    outcome = refused(client, argv, command)   # in MULTI, dooms the EXEC
                elif transaction is None or command.name in RUN_AT_ONCE:
                    outcome = run(client, command, argv)
                else:
                    outcome = self._queue(transaction, command, argv)
            except Exception as error:
                outcome = self._internal_error(argv[0], error)
            if type(outcome) is GeneratorType:
                self.call = Call(self, outcome, argv[0], argv)
                client.running = True
                return self.call
            self._reply(outcome)
        return self._wind_down()

    def _queue(self, transaction: Transaction, command: Command, argv: list[bytes]) -> Any:
        """A command sent between MULTI and EXEC: queued for EXEC, or refused (a command
        that may wait), which dooms the transaction: EXEC will answer EXECABORT."""
        refusal = queue_refusal(command)
        if refusal is not None:
            transaction.aborted = True
            return refusal
        if not transaction.aborted:   # a doomed transaction keeps nothing more (as Redis)
            transaction.queued.append((command, argv))
        self.client.last_active = time.time()
        return QUEUED

    def _wind_down(self) -> Event | Call:
        """The client is leaving: first what it must give back, then CLOSE."""
        # Each clean-up is guarded in the server's mode now, like the upkeep above, not in
        # the mode of the client's last command, or it could miss a command in flight.
        self.client.sync = self.state.config.sync
        if self._hand_back is not None:
            handed, self._hand_back = self._hand_back, None
            self.call = Call(self, hand_back_steps(self.state, handed), b"hand-back")
            return self.call
        if not self._leases_returned:
            self._leases_returned = True
            leases = self.state.ledger.held_by(self.client.id)
            if leases:
                self.call = Call(self, return_leases_steps(leases), b"lease-return")
                return self.call
        if not self._unwatched:
            self._unwatched = True
            self.client.transaction = None
            if self.client.watching:   # under a guard, so that no write marks it meanwhile
                self.call = Call(self, unwatch_steps(self.client, NO_REPLY), b"unwatch")
                return self.call
        return CLOSE

    def close(self) -> None:
        """The socket is closed: the server forgets this client (a threaded model holds a lock)."""
        if not self.closed:
            self.closed = True
            if self.over_output_limit:   # counted here, under that lock: threads leave at once
                self.state.stats.output_disconnects += 1
            self.state.disconnect(self.client)

    # -- replies in, bytes out -------------------------------------------------------

    def _finish(self, call: Call, reply: Any) -> None:
        self.call = None
        self.client.running = False
        if type(reply) is Handed:
            if self.peer_gone:
                self._hand_back = reply   # nobody will read it: it goes back to the list
                return
            reply = reply.reply()
        self._reply(reply)

    def _reply(self, value: Any) -> None:
        if value is NO_REPLY or self.peer_gone:
            return
        try:
            data = encode(value, self.client.protocol)
        except Exception as error:
            data = encode(self._internal_error(self.client.last_command, error))
        self._send(data)

    def _send(self, data: bytes) -> None:
        if not self.peer_gone:
            self._out.append(data)
            self.out_size += len(data)
            if self.out_size > self.state.config.output_buffer_hard_limit:
                # One reply this big (LRANGE of a huge list, KEYS) is dropped at once,
                # not kept until the client has read it.
                self._close_for_output(f"{self.out_size} bytes of replies unsent, past "
                                       "output-buffer-hard-limit")

    def data_to_send(self) -> bytes:
        """Every reply not yet taken, as one buffer (b"" when there is none)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_size = 0
        return data

    @property
    def flush_timeout(self) -> float | None:
        """Seconds a model waits for a FLUSH (or the last replies before CLOSE) to go out:
        output-buffer-soft-seconds; None when that is 0, for no limit."""
        return self.state.config.output_buffer_soft_seconds or None

    def flush_timed_out(self) -> None:
        """The model could not send a FLUSH within flush_timeout: the client stopped reading.
        It is closed; the session hands out only what cleans up, then CLOSE."""
        self._close_for_output("a FLUSH went unread for output-buffer-soft-seconds")

    def _close_for_output(self, why: str) -> None:
        """Past an output limit: the replies are dropped and the connection closes, as
        Redis's client-output-buffer-limit does, so a client that asks for more than it
        reads costs the server at most these limits. INFO counts it."""
        if self.peer_gone:
            return
        self.over_output_limit = True
        log.warning("closing client id=%d addr=%s: %s", self.client.id, self.client.addr, why)
        self.connection_lost()

    def _internal_error(self, name: bytes, error: Exception) -> ReplyError:
        """A bug inside a command: the client gets an error, the log the traceback once."""
        stats = self.state.stats
        self.client.internal_errors += 1   # its own count: one writer, even with threads
        # Logged once per place it failed, so a client that repeats it cannot flood the log.
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = (name.lower(), type(error).__name__, frame.filename, frame.lineno)
        if where not in stats.internal_errors_logged:
            stats.internal_errors_logged.add(where)
            log.error("command %r failed; later failures at the same place are only counted "
                      "(INFO internal_errors)", name.decode("utf-8", "replace"), exc_info=error)
        return ReplyError(INTERNAL_ERROR)


class Call:
    """One command in flight: its generator, and the guards it holds. The model drives it.

        value = None
        while (effect := call.send(value)) is not None:
            try:
                value = perform[type(effect)](effect)
            except Exception as error:      # a ReplyError fails the command with that reply;
                value = error               # anything else is a bug: `-ERR internal error`

    When `send` returns None the command has ended and its reply is queued;
    the model then releases whatever guards the command still holds.
    """

    __slots__ = ("session", "steps", "name", "argv", "_guarded", "_lists")

    def __init__(self, session: Session, steps: Generator[Effect[Any], Any, Any], name: bytes,
                 argv: list[bytes] | None = None):
        self.session = session
        self.steps = steps
        self.name = name
        self.argv = argv or [name]   # as the client sent it (DEBUG.STEP LIST shows it)
        self._guarded: Any = _NOTHING   # the keys its guards cover: a frozenset or _EVERY_KEY
        self._lists = False             # its guards hold the lists' lock too

    def send(self, value: Any = None) -> Effect[Any] | None:
        """Resume the command with an effect's result; the next effect, or None once it ended."""
        try:
            if value is not None and isinstance(value, BaseException):
                effect = self.steps.throw(value)
            else:
                effect = self.steps.send(value)
            # A window 0 wide is no window in any model: the command runs straight on
            # from its read to its write, and the model is not asked to wait at all.
            while type(effect) is RaceWindow and self.session.state.config.no_window:
                effect = self.steps.send(None)
        except StopIteration as done:
            reply = done.value
        except ReplyError as error:
            reply = error
        except Exception as error:
            reply = self.session._internal_error(self.name, error)
        else:
            if type(effect) is PopWait:
                self._guarded = _NOTHING   # the model gives every guard up to wait
                self._lists = False
            return effect
        self.session._finish(self, reply)
        return None

    def cancel(self) -> None:
        """End the command without a reply: its client left mid-wait, or the server stops.
        The model releases the guards it holds and takes it out of any queue it waits in."""
        self.steps.close()
        if self.session.call is self:
            self.session.call = None
            self.session.client.running = False

    def park_step(self, window: RaceWindow | None, holds: Sequence[bytes] | None = None) -> int:
        """Step mode: put this command on the book of parked commands, as it reaches its
        race window (`window`), or the window between two key locks in `unordered` mode
        (`holds`: the keys taken so far). The model then waits on step_event(id)."""
        client = self.session.client
        read = window.read if window is not None else None
        if holds is not None:
            held = "key:" + ",".join(key.decode("utf-8", "replace") for key in holds)
        elif client.sync == "off":
            held = "nothing"
        elif client.sync == "lock" or self._guarded is _EVERY_KEY:
            held = "keyspace"
        else:
            held = "key:" + ",".join(sorted(key.decode("utf-8", "replace")
                                            for key in self._guarded))
        shown = "" if read is None else (read.decode("utf-8", "replace")
                                         if isinstance(read, bytes) else str(read))
        return self.session.state.stepper.park(client.id, describe(self.argv), shown, held,
                                               getattr(self.session.state, "slot", None))

    def guard_plan(self, guard: Guard) -> Sequence[Step]:
        """The locks to take for `guard`, in the one order (shared/guards.py)."""
        mode = self.session.client.sync
        if mode == "off":
            return ()
        held = self._guarded
        if held is _NOTHING:
            self._guarded = _EVERY_KEY if guard.keys is ALL_KEYS else frozenset(guard.keys)
            self._lists = guard.lists
            return lock_plan(mode, guard)
        # Nested: only over what the command already holds, or the order could break.
        if (guard.lists and not self._lists) or (held is not _EVERY_KEY and (
                guard.keys is ALL_KEYS or not held.issuperset(guard.keys))):
            raise RuntimeError(f"a nested guard may only re-enter what its command holds: {guard}")
        if held is _EVERY_KEY:
            # The whole keyspace is held (EXEC running its queue): a key's lock would add
            # nothing, and taking one below the lists' lock would reach up the ladder.
            guard = _WHOLE_KEYSPACE
        return lock_plan(mode, guard, nested=True)
