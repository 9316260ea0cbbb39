"""Run a command on its event loop: ``main``, and its one-line errors and exit statuses."""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import anyio

from .._errors import AsyncClfError
from .errors import CommandError, one_line
from .output import Output
from .parser import parse
from .placement import placement


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = parse(argv)
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print("asyncclf: trio is not installed; 'pip install trio' first.", file=sys.stderr)
        return 1
    if sys.stdout is None:  # started with standard output closed
        print("asyncclf: <stdout>: closed; nowhere to write the results", file=sys.stderr)
        return 1
    out = Output(sys.stdout)
    try:
        make_placement = placement(args.executor, args.workers)
    except CommandError as exc:
        print(f"asyncclf: {exc}", file=sys.stderr)
        return 1

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"asyncclf: warning: {one_line(str(message))}", file=sys.stderr)

    async def run() -> None:
        async with make_placement() as where:
            await args.run(args, out, where)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show  # one line, like errors
            anyio.run(run, backend=args.backend)
    except (CommandError, AsyncClfError) as exc:
        print(f"asyncclf: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        try:  # and keep Python from reporting the pipe again when it flushes at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print("asyncclf: interrupted", file=sys.stderr)
        return 130
    return 0
