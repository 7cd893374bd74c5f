"""contend's clients: the `contend` command line, and (soon) load, race, bench, demo, top."""
