"""Model files for the commands: load with --trusted and --sha256, check -o first, save, digest."""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile

from .._classifier import AsyncClassifier
from .._errors import AsyncClfError
from .errors import CommandError, about, failure
from .placement import Placement


async def open_model(path: str, args: argparse.Namespace, placement: Placement) -> AsyncClassifier:
    """Load the model file ``path`` with the command's --trusted and --sha256."""
    try:
        return await AsyncClassifier.load(
            path, trusted=args.trusted, sha256=args.sha256, **placement
        )
    except Exception as exc:  # load parses an untrusted file: any failure is about it
        if isinstance(exc, AsyncClfError):
            raise about(path, exc) from exc
        msg = f"{path}: not a readable model file ({failure(exc)})"
        raise CommandError(msg) from exc


async def load_scoring(args: argparse.Namespace, placement: Placement) -> AsyncClassifier:
    """Load MODEL, which must score texts (classify, rank and eval all need scores)."""
    clf = await open_model(args.model, args, placement)
    estimator = clf.estimator_
    if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
        msg = (
            f"{args.model}: its {type(estimator).__name__} has neither predict_proba nor "
            f"decision_function; this command needs scores"
        )
        raise CommandError(msg)
    return clf


def check_output(path: str, data: str) -> None:
    """Fail unless a model can be written to ``path``, before any work is done."""
    if os.path.isdir(path):
        msg = f"{path}: is a directory; name the model file to write"
        raise CommandError(msg)
    if os.path.exists(path) and not os.path.isfile(path):
        msg = f"{path}: is not a regular file; name the model file to write"
        raise CommandError(msg)
    try:
        same = data != "-" and os.path.samefile(path, data)
    except OSError:  # either does not exist (yet)
        same = False
    if same:
        msg = f"{path}: is the training data; name another file for the model"
        raise CommandError(msg)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        msg = f"{path}: cannot write the model: {directory} {what}"
        raise CommandError(msg)
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        msg = f"{path}: cannot write the model in {directory}: {exc.strerror or exc}"
        raise CommandError(msg) from None


async def save(clf: AsyncClassifier, path: str) -> str:
    """Save the model to ``path``; return its SHA-256 digest."""
    try:
        return await clf.save(path)
    except OSError as exc:
        msg = f"{path}: cannot write the model: {exc.strerror or exc}"
        raise CommandError(msg) from exc
    except AsyncClfError as exc:
        raise about(path, exc) from exc


def file_digest(path: str) -> str:
    """Return the SHA-256 digest of the file ``path``, read a megabyte at a time."""
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()
