"""contend: a networked multi-client socket playground for learning and measuring thread safety.

Installed, the repository's folders are one package (pyproject.toml maps them):

    contend.shared   shared/   the sans-io core: protocol, session, commands, keyspace
    contend.server   server/   one module per concurrency model, each an adapter around shared/
    contend.client   client/   the `contend` command line: load, race, bench, demo, ping

This folder holds only the package's root; `python -m contend` is the `contend` command.
"""
