"""Save and load fitted models safely: skops files, checked on the way in.

A model file is a skops archive (a zip of JSON and numpy arrays, no pickle) holding
the fitted estimator and a header: a format marker, the asyncclf and scikit-learn
versions that wrote it, the classes, the model version and the model's identity
(its fingerprint, so that every process loading the file agrees on it). Loading refuses any type
outside scikit-learn, numpy and scipy's own (skops' default list plus the private
calibration types of the default pipeline) unless the caller names it,
so a file from an untrusted source cannot run code on load.

Loading checks, in order: the file's size, its SHA-256 digest if one is pinned, the
zip's declared sizes and compression, the types it names, then the header against
the estimator. Every failure to read a model is a :class:`PersistenceError`.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import json
import os
import re
import warnings
import zipfile
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops.io as sio
from sklearn.base import clone

from . import _files
from ._errors import InvalidParameterError, PersistenceError
from ._validation import Integer, check_param, or_none
from ._version import __version__
from ._work.fingerprint import NETWORK_STATE, fingerprint
from ._work.packing import pack, vectorisers, vocabulary_of

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_TRUSTED", "FORMAT", "dump_model", "load_model"]

FORMAT = "asyncclf-model"
FORMAT_VERSION = 2
"""Version 2 stores text vectorisers' vocabularies as arrays (see ``_pack``); version 1
files, which skops stored entry by entry, still load."""
READABLE_VERSIONS = (1, 2)

_pack = pack
"""How ``dump_model`` takes a model apart (a seam the tests damage the result of)."""

DEFAULT_TRUSTED = (
    "asyncclf._text.sublinear_tf",
    "asyncclf.neural.EmbeddingBagClassifier",
    "asyncclf._text.tokenize",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.calibration._TemperatureScaling",
)
"""Types trusted beyond skops' defaults: the pipelines' tokeniser and the online one's
term-frequency damping (our own functions), and private parts of
``CalibratedClassifierCV`` (temperature scaling on scikit-learn >= 1.8, sigmoid before)."""

DEFAULT_MAX_SIZE = 256 * 2**20
"""Most bytes a model file may hold, and expand to, unless ``max_size`` says otherwise:
ten times the default pipeline trained on all of 20 Newsgroups (25 MB). A skops file
can parse into about 25 times its size in Python objects."""

DEFAULT_MAX_NETWORK_SIZE = 4 * 2**30
"""The same for a network file (safetensors), whose bytes are the weights themselves,
so that loading takes about its size: ten times a default ``EmbeddingBagClassifier``
(2**20 x 100 weights, 419 MB)."""

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_MODEL_ID = re.compile(r"[0-9a-f]{16}")


def dump_model(
    path: str | os.PathLike[str],
    estimator: Any,
    labels: Sequence[Hashable],
    version: int,
    model_id: str | None = None,
) -> str:
    """Write the model to ``path`` atomically; return the file's SHA-256 digest (hex).

    ``model_id`` is the model's fingerprint (computed here when ``None``).
    A symbolic link at ``path`` is followed: its target is replaced and the link kept.
    An existing file keeps its permission bits; a new one gets ``0o666`` less the
    process umask, as ``open(path, "w")`` would give it.

    Raises:
        PersistenceError: the estimator cannot be serialised or the file not written.
    """

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "asyncclf_version": __version__,
        "sklearn_version": sklearn.__version__,
        "classes": [repr(label) for label in labels],
        "model_version": version,
    }
    try:
        header["model_id"] = fingerprint(estimator) if model_id is None else model_id
        if hasattr(estimator, NETWORK_STATE):
            data = _dump_network(estimator, header)
        else:
            packed, vocabularies = _pack(estimator)
            content = {"header": header, "estimator": packed, "vocabularies": vocabularies}
            # Stored, not compressed: load_model refuses compressed members (see there).
            data = sio.dumps(content, compression=zipfile.ZIP_STORED)
    except Exception as exc:
        how = "as a network" if hasattr(estimator, NETWORK_STATE) else "with skops"
        msg = f"Could not serialise {type(estimator).__name__} {how}: {exc}"
        raise PersistenceError(msg) from exc
    try:
        _files.write_atomically(Path(os.path.realpath(path)), data)
    except OSError as exc:
        msg = f"Cannot write model file {os.fspath(path)}: {exc.strerror or exc}."
        raise PersistenceError(msg) from exc
    return hashlib.sha256(data).hexdigest()


def _unpack(source: Path, estimator: Any, vocabularies: Any) -> None:
    """Give the loaded ``estimator``'s vectorisers back their vocabularies, checked."""
    parts = vectorisers(estimator, packed=True)
    if not isinstance(vocabularies, dict) or set(vocabularies) != set(parts):
        msg = (
            f"{source} is inconsistent: it holds vocabularies for {sorted(vocabularies)!r} "
            f"but its estimator needs them for {sorted(parts)!r}."
        )
        raise PersistenceError(msg)
    for name, arrays in vocabularies.items():
        text, lengths, columns = (arrays.get(key) for key in ("text", "lengths", "columns"))
        valid = (
            isinstance(text, np.ndarray)
            and text.dtype == np.uint8
            and text.ndim == 1
            and isinstance(lengths, np.ndarray)
            and lengths.dtype == np.int64
            and isinstance(columns, np.ndarray)
            and columns.dtype == np.int64
            and lengths.ndim == columns.ndim == 1
            and len(lengths) == len(columns)
            and bool((lengths >= 0).all())  # "" is a term of token_pattern=r"\w*"
            and bool((lengths <= len(text)).all())  # so the sum below cannot wrap
            and np.array_equal(np.sort(columns), np.arange(len(columns)))
        )
        terms = text.tobytes().decode("utf-8", "surrogatepass") if valid else ""
        vocabulary = vocabulary_of(arrays) if valid and sum(lengths.tolist()) == len(terms) else {}
        features = getattr(getattr(parts[name], "idf_", None), "shape", (len(columns),))[0]
        if not vocabulary or len(vocabulary) != len(columns) or features != len(columns):
            msg = f"{source} is inconsistent: the vocabulary of {name or 'the estimator'!r}."
            raise PersistenceError(msg)
        parts[name].vocabulary_ = vocabulary


def load_model(
    path: str | os.PathLike[str],
    trusted: Iterable[str] = (),
    *,
    sha256: str | None = None,
    max_size: int | None = None,
) -> tuple[Any, int, dict[str, Any]]:
    """Read a model file; return the estimator, its model version and its header.

    The header's ``"model_id"`` is the model's identity, as saved (or, in a file
    written before asyncclf stored it, the loaded estimator's fingerprint).

    Args:
        path: The model file.
        trusted: Type names to allow beyond scikit-learn, numpy and scipy's own.
        sha256: The file's expected SHA-256 digest (64 hex digits, any case); any
            other content is refused before it is parsed.
        max_size: Most bytes the file may hold and expand to; ``None`` means
            :data:`DEFAULT_MAX_SIZE` for a skops archive, and
            :data:`DEFAULT_MAX_NETWORK_SIZE` for a network file.

    Raises:
        InvalidParameterError: ``sha256`` is not 64 hex digits or ``max_size`` not
            an int >= 1 (a caller's error, whatever the file holds).
        PersistenceError: the file is missing, too large, differs from ``sha256``,
            truncated, corrupt, not an asyncclf model, holds a type nobody trusted,
            or its header does not match its estimator.
    """
    given = check_param("max_size", max_size, or_none(Integer(1, unit="bytes")))
    limit = DEFAULT_MAX_SIZE if given is None else given
    if sha256 is not None and not (isinstance(sha256, str) and _DIGEST.fullmatch(sha256)):
        msg = f"sha256 must be a SHA-256 digest of 64 hex digits, not {sha256!r}."
        raise InvalidParameterError(msg)
    allowed = set(DEFAULT_TRUSTED) | set(trusted)
    source = Path(path)
    try:
        network_limit = DEFAULT_MAX_NETWORK_SIZE if max_size is None else limit
        data, limit = _files.read_model_file(source, (limit, network_limit))
    except (OSError, ValueError) as exc:  # ValueError: a path holding NUL
        msg = f"Cannot read model file {source}: {getattr(exc, 'strerror', None) or exc}."
        raise PersistenceError(msg) from exc
    if data is None or len(data) > limit:
        msg = (
            f"{source} is larger than max_size ({limit} bytes); pass a larger max_size "
            f"to load it if you trust it."
        )
        raise PersistenceError(msg)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(digest, sha256.lower()):
            msg = (
                f"{source} is not the file pinned by sha256: its digest is {digest}, "
                f"not {sha256.lower()}. It was changed or replaced since it was saved."
            )
            raise PersistenceError(msg)
    try:
        if data[:2] == b"PK":  # a zip: a skops archive
            estimator, version, header = _parse(source, data, allowed, limit)
        else:
            estimator, version, header = _parse_network(source, data, allowed)
    except PersistenceError:
        raise
    except Exception as exc:  # skops and zipfile raise anything on malformed input
        msg = f"{source} is not a readable asyncclf model file ({type(exc).__name__}: {exc})."
        raise PersistenceError(msg) from exc
    if header.get("sklearn_version") != sklearn.__version__:
        warnings.warn(
            f"{source} was written with scikit-learn {header.get('sklearn_version')} and is "
            f"loaded with {sklearn.__version__}; check its predictions before serving it.",
            UserWarning,
            stacklevel=3,
        )
    return estimator, version, header


# -- networks: safetensors weights and a JSON description ------------------------------


def _dump_network(estimator: Any, header: dict[str, Any]) -> bytes:
    """A safetensors file: the weights as raw arrays, the asyncclf header and the
    network's description as JSON in its metadata. No pickle anywhere."""
    import safetensors.numpy

    description, arrays = getattr(estimator, NETWORK_STATE)()
    kind = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    metadata = {
        FORMAT: json.dumps(header),
        "estimator": kind,
        "description": json.dumps(description),
    }
    data: bytes = safetensors.numpy.save(arrays, metadata=metadata)
    return data


def _parse_network(source: Path, data: bytes, allowed: set[str]) -> tuple[Any, int, dict[str, Any]]:
    """Check and load a network file; malformed content may raise any Exception."""
    metadata = _safetensors_metadata(source, data)
    if FORMAT not in metadata:
        msg = f"{source} is not an asyncclf model (no asyncclf header)."
        raise PersistenceError(msg)
    header = _check_header(source, json.loads(metadata[FORMAT]))
    kind = metadata.get("estimator")
    if kind not in allowed:
        msg = (
            f"{source} holds a network of type {kind}, which is not trusted. Loading it "
            f"would import and run its code. If you trust the file's source, pass "
            f"trusted={[kind]!r}."
        )
        raise PersistenceError(msg)
    module, _, name = str(kind).rpartition(".")
    try:
        estimator_type = getattr(importlib.import_module(module), name)
    except ImportError as exc:  # asyncclf.neural without torch says which extra
        msg = f"{source} holds a {kind}, which cannot be imported here: {exc}"
        raise PersistenceError(msg) from exc
    import safetensors.numpy

    arrays = safetensors.numpy.load(data)
    estimator = estimator_type._asyncclf_restore_(json.loads(metadata["description"]), arrays)
    return _check_estimator(source, estimator, header)


def _safetensors_metadata(source: Path, data: bytes) -> dict[str, str]:
    """The metadata in the header of the safetensors file ``data`` (an 8-byte
    little-endian size, then that many bytes of JSON): the one parser of a network
    file's header (safetensors parses the file again for the weights).

    Raises:
        PersistenceError: ``data`` is too short for the header it declares.
        ValueError: the header is not JSON (as any malformed content may raise).
    """
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        msg = (
            f"{source} is not a readable asyncclf model file: neither a skops archive "
            f"nor a network file, or truncated ({len(data)} bytes)."
        )
        raise PersistenceError(msg)
    metadata: dict[str, str] = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    return metadata


def _check_header(source: Path, header: Any) -> dict[str, Any]:
    """Refuse a header that is not an asyncclf model's, of a version read here."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        msg = f"{source} is a skops file but not an asyncclf model (no asyncclf header)."
        raise PersistenceError(msg)
    format_version = header.get("format_version")
    if isinstance(format_version, bool) or format_version not in READABLE_VERSIONS:
        msg = (
            f"{source} has model format version {format_version!r}; this "
            f"asyncclf reads versions {', '.join(map(str, READABLE_VERSIONS))}."
        )
        raise PersistenceError(msg)
    listed = header.get("classes")
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        msg = f"{source} has a malformed header: classes must be a list of strings."
        raise PersistenceError(msg)
    return header


def _parse(
    source: Path, data: bytes, allowed: set[str], limit: int
) -> tuple[Any, int, dict[str, Any]]:
    """Check and load the archive; malformed content may raise any Exception."""
    _check_archive(source, data, limit)
    untrusted = sio.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - allowed)
    if refused:
        msg = (
            f"{source} contains types that are not trusted: {', '.join(refused)}. Loading it "
            f"could run their code. If you trust the file's source, pass "
            f"trusted={refused!r}."
        )
        raise PersistenceError(msg)
    content = sio.loads(data, trusted=sorted(allowed & set(untrusted)))
    header = _check_header(source, content.get("header") if isinstance(content, dict) else None)
    estimator = content.get("estimator")
    if header["format_version"] >= 2:
        _unpack(source, estimator, content.get("vocabularies"))
    return _check_estimator(source, estimator, header)


def _check_estimator(
    source: Path, estimator: Any, header: dict[str, Any]
) -> tuple[Any, int, dict[str, Any]]:
    """Check the loaded estimator against its header; fill in a missing model id."""
    listed = header["classes"]
    classes = getattr(estimator, "classes_", None)
    if classes is None or [repr(c) for c in np.asarray(classes).tolist()] != listed:
        msg = (
            f"{source} is inconsistent: its header lists classes {listed} "
            f"but its estimator has {classes!r}. The file may have been tampered with."
        )
        raise PersistenceError(msg)
    if not all(callable(getattr(estimator, name, None)) for name in ("predict", "get_params")):
        msg = f"{source} holds a {type(estimator).__name__}, which is not a classifier."
        raise PersistenceError(msg)
    # AsyncClassifier.load clones the estimator and probes these; a malformed one
    # fails here, inside the guard, rather than there.
    clone(estimator)
    for name in ("predict_proba", "decision_function"):
        hasattr(estimator, name)
    version = header.get("model_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        msg = f"{source} has an invalid model version {version!r}."
        raise PersistenceError(msg)
    model_id = header.get("model_id")
    if model_id is None:
        header["model_id"] = fingerprint(estimator)
    elif not (isinstance(model_id, str) and _MODEL_ID.fullmatch(model_id)):
        msg = f"{source} has an invalid model id {model_id!r} (16 lowercase hex digits)."
        raise PersistenceError(msg)
    return estimator, version, header


def _check_archive(source: Path, data: bytes, limit: int) -> None:
    """Refuse a zip that would expand beyond ``limit`` before anything decompresses it.

    Only stored (uncompressed) members are accepted, as ``dump_model`` writes them.
    CPython's zipfile stops a member at its declared ``file_size`` and then fails its
    CRC check, but ``ZipFile.read`` first decompresses the whole member in memory: a
    300 MB member of zeros declared as 10 bytes took 590 MiB to read, deflated or
    compressed with bzip2 (to 342 bytes) or lzma (CPython 3.11). A stored member cannot
    expand at all: zipfile returns at most its declared size of the stored bytes, which
    ``limit`` already bounds.
    tests/test_persistence.py checks both behaviours of zipfile (``test_zipfile_*``).
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    declared = sum(info.file_size for info in members)
    if declared > limit:
        msg = (
            f"{source} would expand to {declared} bytes, more than max_size ({limit} "
            f"bytes); pass a larger max_size to load it if you trust it."
        )
        raise PersistenceError(msg)
    compressed = sorted(i.filename for i in members if i.compress_type != zipfile.ZIP_STORED)
    if compressed:
        msg = (
            f"{source} has compressed members ({', '.join(compressed)}); asyncclf model "
            f"files store them uncompressed, so that their size is bounded before reading."
        )
        raise PersistenceError(msg)
