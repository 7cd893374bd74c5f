import sys

from contend.server import main

sys.exit(main())
