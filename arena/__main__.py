"""``python -m arena``: the operators' command line (see ``arena.cli``)."""

import sys

from arena.cli import main

if __name__ == "__main__":
    sys.exit(main())
