"""``python -m asyncclf``: the command line (see ``asyncclf --help``)."""

import sys

if __name__ == "__main__":
    # Imported here, and absolutely: worker processes run this file again as a plain
    # script (to find what the main module defines) and must find nothing to do.
    from asyncclf._cli import main

    sys.exit(main())
