"""``python -m bench [--smoke] [--only NAME,...]``: see ``bench.harness``."""

import sys

from .harness import main

sys.exit(main())
