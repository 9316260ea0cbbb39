"""Save and load fitted models safely: skops files, checked on the way in.

A model file is a skops archive (a zip of JSON and numpy arrays, no pickle) holding
the fitted estimator and a header: a format marker, the asyncclf and scikit-learn
versions that wrote it, the classes and the model version. Loading refuses any type
outside scikit-learn, numpy and scipy's own (skops' default list plus the private
calibration types of the default pipeline) unless the caller names it,
so a file from an untrusted source cannot run code on load.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from collections.abc import Hashable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops.io as sio

from ._errors import PersistenceError

__all__ = ["DEFAULT_TRUSTED", "FORMAT", "dump_model", "load_model"]

FORMAT = "asyncclf-model"
FORMAT_VERSION = 1

DEFAULT_TRUSTED = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
)
"""Types trusted beyond skops' defaults: private parts of ``CalibratedClassifierCV``
(temperature scaling on scikit-learn >= 1.8, sigmoid before)."""


def dump_model(
    path: str | os.PathLike[str],
    estimator: Any,
    labels: list[Hashable],
    version: int,
) -> str:
    """Write the model to ``path`` atomically; return the file's SHA-256 digest (hex)."""
    from . import __version__ as asyncclf_version

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "asyncclf_version": asyncclf_version,
        "sklearn_version": sklearn.__version__,
        "classes": [repr(label) for label in labels],
        "model_version": version,
    }
    try:
        data = sio.dumps({"header": header, "estimator": estimator})
    except Exception as exc:
        msg = f"Could not serialise {type(estimator).__name__} with skops: {exc}"
        raise PersistenceError(msg) from exc
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def load_model(
    path: str | os.PathLike[str],
    trusted: Iterable[str] = (),
    *,
    sha256: str | None = None,
    max_size: int | None = None,
) -> tuple[Any, int, dict[str, Any]]:
    """Read a model file; return the estimator, its model version and its header.

    Raises:
        PersistenceError: the file is missing, truncated, corrupt, not an asyncclf model,
            holds a type nobody trusted, or its header does not match its estimator.
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        msg = f"Cannot read model file {source}: {exc.strerror or exc}."
        raise PersistenceError(msg) from exc
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        msg = f"{source} is not a readable asyncclf model file (truncated or corrupt: {exc})."
        raise PersistenceError(msg) from exc
    allowed = set(DEFAULT_TRUSTED) | set(trusted)
    refused = sorted(set(untrusted) - allowed)
    if refused:
        msg = (
            f"{source} contains types that are not trusted: {', '.join(refused)}. Loading it "
            f"could run their code. If you trust the file's source, pass "
            f"trusted={refused!r}."
        )
        raise PersistenceError(msg)
    try:
        content = sio.loads(data, trusted=sorted(allowed & set(untrusted)))
    except Exception as exc:
        msg = f"{source} is not a readable asyncclf model file ({type(exc).__name__}: {exc})."
        raise PersistenceError(msg) from exc
    header = content.get("header") if isinstance(content, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        msg = f"{source} is a skops file but not an asyncclf model (no asyncclf header)."
        raise PersistenceError(msg)
    if header.get("format_version") != FORMAT_VERSION:
        msg = (
            f"{source} has model format version {header.get('format_version')!r}; this "
            f"asyncclf reads version {FORMAT_VERSION}."
        )
        raise PersistenceError(msg)
    estimator = content.get("estimator")
    classes = getattr(estimator, "classes_", None)
    if classes is None or [repr(c) for c in np.asarray(classes).tolist()] != header["classes"]:
        msg = (
            f"{source} is inconsistent: its header lists classes {header.get('classes')} "
            f"but its estimator has {classes!r}. The file may have been tampered with."
        )
        raise PersistenceError(msg)
    version = header.get("model_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"{source} has an invalid model version {version!r}."
        raise PersistenceError(msg)
    if header.get("sklearn_version") != sklearn.__version__:
        warnings.warn(
            f"{source} was written with scikit-learn {header.get('sklearn_version')} and is "
            f"loaded with {sklearn.__version__}; check its predictions before serving it.",
            UserWarning,
            stacklevel=3,
        )
    return estimator, version, header
