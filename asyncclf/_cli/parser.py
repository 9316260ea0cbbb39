"""The command line's grammar: argparse, the option types and the usage errors (exit 2)."""

from __future__ import annotations

import argparse
import math
import re
import urllib.parse
from collections.abc import Sequence

from .._version import __version__
from . import commands
from .commands import Command
from .learn import learn
from .placement import DASK

_RUN: dict[str, Command] = {
    "train": commands.train,
    "learn": learn,
    "classify": commands.classify,
    "rank": commands.rank,
    "eval": commands.evaluate,
    "demo": commands.demo,
}
"""The function that runs each command."""


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` if None); a usage error exits with status 2.

    The namespace's ``run`` is the command to run (a :data:`Command`); ``executor``
    is ``threads``, ``processes`` or a Dask scheduler's ``tcp://`` address.
    """
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional (INPUT) its value only right after MODEL;
    # accept it after the options too, as in "rank MODEL --label L -k 5 INPUT".
    if extra and getattr(args, "input", None) == "-" and len(extra) == 1:
        args.input = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "executor"):  # demo
        args.executor, args.workers = "threads", None
    if args.executor.startswith(DASK) and args.workers is not None:
        args.command_parser.error(
            "argument --workers: not for --executor dask://: a Dask cluster has the "
            "workers it was started with"
        )
    if args.command == "learn":
        _check_learn(args)
    if getattr(args, "where", None) and getattr(args, "jsonl", True) is False:
        args.command_parser.error(
            "argument --where: needs JSON records: add --jsonl (INPUT is plain text, one "
            "text per line, without it)"
        )
    args.run = _RUN[args.command]
    return args


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        msg = f"must be an integer >= 0, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number < 1:
        msg = f"must be a number in [0, 1), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"must be an integer >= 1, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _executor(value: str) -> str:
    """Return ``threads``, ``processes`` or the Dask scheduler's ``tcp://`` address."""
    if value in ("threads", "processes"):
        return value
    if not value.startswith("dask://"):
        msg = f"must be threads, processes or dask://HOST:PORT, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    url = urllib.parse.urlsplit(value)
    try:
        port = url.port
    except ValueError:  # not a number, or out of range
        port = None
    extra = url.path or url.query or url.fragment or url.username or url.password
    if not url.hostname or not port or extra:
        msg = (
            f"must be dask://HOST:PORT, a Dask scheduler's host and port (such as "
            f"dask://127.0.0.1:8786), not {value!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return DASK + url.netloc


def _condition(value: str) -> tuple[str, str]:
    """Return the field and the value of ``--where FIELD=VALUE``."""
    name, equals, wanted = value.partition("=")
    if not equals or not name:
        msg = f"must be FIELD=VALUE (such as split=train), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, wanted


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        msg = "must be 64 hexadecimal digits, the SHA-256 digest train prints"
        raise argparse.ArgumentTypeError(msg)
    return value.lower()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncclf", description="Async text classification with scikit-learn."
    )
    parser.add_argument("--version", action="version", version=f"asyncclf {__version__}")
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop to run on"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def fields(command: argparse.ArgumentParser, label: bool) -> None:
        command.add_argument("--text-field", default="text", help="JSON field of the text")
        if label:
            command.add_argument("--label-field", default="label", help="JSON field of the label")
        command.add_argument(
            "--where",
            type=_condition,
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="keep only the JSON records whose FIELD is VALUE (a string as is, other "
            "values as JSON: 3, true, null); repeatable, all must match",
        )

    def model(command: argparse.ArgumentParser) -> None:
        command.add_argument("model", metavar="MODEL", help="a model file saved by train")
        trust(command, "MODEL")

    def trust(command: argparse.ArgumentParser, model: str) -> None:
        command.add_argument(
            "--trusted",
            action="append",
            default=[],
            metavar="TYPE",
            help=f"a type to trust in {model}, repeatable (only for files from a trusted source)",
        )
        command.add_argument(
            "--sha256",
            type=_sha256,
            metavar="HEX",
            help=f"refuse {model} unless its SHA-256 digest is HEX (train and learn print it)",
        )

    def workers(command: argparse.ArgumentParser, threads_only: bool = False) -> None:
        command.add_argument(
            "--executor",
            type=_executor,
            default="threads",
            metavar="threads" if threads_only else "{threads,processes,dask://HOST:PORT}",
            help="threads only: learn runs in worker threads of this process"
            if threads_only
            else "where the model runs: worker threads (default), worker processes on this "
            "machine, or the Dask cluster whose scheduler is at HOST:PORT",
        )
        command.add_argument(
            "--workers",
            type=_positive,
            metavar="N",
            help="at most N model calls at once"
            if threads_only
            else "threads: at most N model calls at once; processes: N worker processes "
            "(default: one per CPU); not for dask",
        )
        command.set_defaults(command_parser=command)  # for errors about both options

    def texts(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "input",
            nargs="?",
            default="-",
            metavar="INPUT",
            help="one text per line (gzip too); - is stdin",
        )
        command.add_argument(
            "--jsonl", action="store_true", help="INPUT is JSON Lines with a text field"
        )
        fields(command, label=False)

    train = subparsers.add_parser("train", help="train the default classifier on JSON Lines")
    train.add_argument(
        "data", metavar="DATA", help="JSON Lines with text and label, or gzip of it; - is stdin"
    )
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    train.add_argument(
        "--holdout", type=_fraction, default=0.2, help="fraction held out to report accuracy"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    fields(train, label=True)
    workers(train)

    learn = subparsers.add_parser(
        "learn",
        help="learn online from JSON Lines, printing progressive accuracy",
        usage="%(prog)s DATA -o MODEL [--from MODEL] [--classes LABEL [LABEL ...]] [options]",
        description="Learn from each example in turn (test, then train), saving MODEL as it "
        "goes and at the end.",
    )
    learn.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="JSON Lines with text and label, or gzip of it; - is stdin",
    )
    learn.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file, saved every --checkpoint-every examples and at the end",
    )
    learn.add_argument(
        "--from",
        dest="start",
        metavar="MODEL",
        help="learn on from this model file (saved by learn); it keeps its classes",
    )
    learn.add_argument(
        "--classes",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="every label DATA holds; needed without --from",
    )
    trust(learn, "the --from MODEL")
    learn.add_argument(
        "--on-error",
        choices=["raise", "yield"],
        default="raise",
        help="a bad line (bad JSON, a missing field, a label outside the classes) ends "
        "the command (raise, the default) or is skipped with a warning and counted "
        "(yield, as learn(on_error='yield') reports it)",
    )
    learn.add_argument(
        "--batch-size", type=_positive, default=256, metavar="N", help="largest mini-batch (256)"
    )
    learn.add_argument(
        "--publish-every",
        type=_positive,
        default=1000,
        metavar="N",
        help="publish the model learned every N examples, and report (1000)",
    )
    learn.add_argument(
        "--checkpoint-every",
        type=_positive,
        metavar="N",
        help="save MODEL at the first publish after every N examples (default: --publish-every)",
    )
    learn.add_argument(
        "--window",
        type=_positive,
        default=1000,
        metavar="N",
        help="examples the recent accuracy is measured over (1000)",
    )
    fields(learn, label=True)
    workers(learn, threads_only=True)

    classify = subparsers.add_parser("classify", help="label each input line (JSON Lines out)")
    model(classify)
    texts(classify)
    classify.add_argument("--with-text", action="store_true", help="include the text")
    workers(classify)

    rank = subparsers.add_parser("rank", help="the k texts most likely to have a label")
    model(rank)
    rank.add_argument("--label", required=True, help="the label to rank by, as train prints it")
    rank.add_argument("-k", type=_count, default=10, help="how many texts to keep (default 10)")
    texts(rank)
    workers(rank)

    evaluate = subparsers.add_parser("eval", help="accuracy, macro-F1 and a per-class report")
    model(evaluate)
    evaluate.add_argument(
        "data", metavar="DATA", help="JSON Lines with text and label, or gzip of it"
    )
    fields(evaluate, label=True)
    workers(evaluate)

    subparsers.add_parser(
        "demo", help="train on the bundled SMS corpus, then classify and rank concurrently"
    )
    return parser


def _check_learn(args: argparse.Namespace) -> None:
    """Refuse what the learn command's parser cannot (exit status 2)."""
    error = args.command_parser.error
    if args.data is None:
        if args.classes:
            error(
                "the following arguments are required: DATA (--classes takes every word up "
                "to the next option: put DATA before it)"
            )
        error("the following arguments are required: DATA")
    if args.executor != "threads":
        error(
            "argument --executor: learn runs in worker threads of this process, one "
            "mini-batch after another; processes and dask:// are not for learn"
        )
    if args.start is None:
        if not args.classes:
            error(
                "argument --classes: needed without --from: name every label DATA holds "
                "(e.g. --classes ham spam)"
            )
        if len(set(args.classes)) < 2:
            error("argument --classes: names one class; a classifier needs 2 or more")
        if args.sha256 is not None or args.trusted:
            which = "--sha256" if args.sha256 is not None else "--trusted"
            error(f"argument {which}: only with --from MODEL, the model it applies to")
