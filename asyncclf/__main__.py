"""Command line: ``python -m asyncclf demo`` (or the ``asyncclf`` script)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

import anyio

from . import __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="asyncclf", description="Async text classification with scikit-learn."
    )
    parser.add_argument("--version", action="version", version=f"asyncclf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train on the bundled SMS corpus, then classify and rank concurrently"
    )
    demo.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop to run on"
    )
    args = parser.parse_args(argv)

    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print(
            "asyncclf: trio is not installed; install it with 'pip install trio'.", file=sys.stderr
        )
        return 1

    from ._demo import run_demo

    anyio.run(run_demo, backend=args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
