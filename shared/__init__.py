"""contend's sans-io core: everything a server model shares, and nothing it waits on.

    resp.py       bytes -> commands (RequestParser), replies -> bytes (encode)
    args.py       Redis's rules and error texts for integers, timeouts, globs
    keyspace.py   the data: strings and lists
    waiters.py    BLPOP waiters, served first come, first served
    pool.py       the lease ledger behind POOL.*
    config.py     serve flags and CONFIG GET/SET
    state.py      ServerState (per server) and Client (per connection)
    effects.py    what a command asks of its model: guards, waits, wake-ups
    commands/     every command's meaning, once; `dispatch` runs one
    info.py       INFO's text

Nothing here imports socket, threading, selectors or trio (docs/design.md).
"""
