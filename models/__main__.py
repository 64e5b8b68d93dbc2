"""``python -m models``: the model tools' command line (see ``models.cli``)."""

import sys

from models.cli import main

if __name__ == "__main__":
    sys.exit(main())
