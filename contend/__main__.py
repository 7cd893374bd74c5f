"""`python -m contend ...`: the `contend` command, for when its script is not on PATH."""

import sys

from contend.client.cli import main

sys.exit(main())
