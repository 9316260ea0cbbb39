"""``python -m asyncclf``: the command line (see ``asyncclf --help``)."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
