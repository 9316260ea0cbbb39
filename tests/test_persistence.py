"""Safe model files: round trips, atomic saves, and refusals of bad or untrusted files."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import struct
import sys
import threading
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
import skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import LabelEncoder
from sklearn.svm import LinearSVC

from asyncclf import (
    AsyncClassifier,
    InvalidParameterError,
    NotFittedError,
    PersistenceError,
    _persistence,
    default_estimator,
    online_estimator,
)

from .conftest import Classifiers
from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

pytestmark = pytest.mark.anyio

TEXTS = ["free prize now", "lunch at noon", "cash cash prize", "see you soon"]
LABELS = ["spam", "ham", "spam", "ham"]
FAKE = ["tests.fakes.KeywordClassifier"]

# Tests that take ``make`` save and load models served on every executor. The others
# check files, what is refused and how a save fails (monkeypatched in this process):
# saving and loading run in a thread of this process whatever the executor.


async def default_model(make: Callable[[], AsyncClassifier] = AsyncClassifier) -> AsyncClassifier:
    return await make().fit(TEXTS * 3, LABELS * 3)


Members = dict[str, bytes]
Edit = Callable[[Members], object]


def edit_members(path: Path, edit: Edit, compression: int = zipfile.ZIP_STORED) -> None:
    """Edit the members of a skops archive in place, as an attacker with the file could."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    edit(members)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def rewrite_schema(path: Path, old: str, new: str) -> None:
    """Edit the JSON inside a skops archive, as an attacker with the file could."""

    def replace(members: Members) -> None:
        schema = members["schema.json"].decode()
        assert old in schema
        members["schema.json"] = schema.replace(old, new).encode()

    edit_members(path, replace)


async def test_round_trip_keeps_predictions_classes_and_version(
    make: Classifiers, tmp_path: Path
) -> None:
    """save then load gives the same probabilities, classes and model version."""
    clf = await default_model(make)
    await clf.fit(TEXTS * 4, LABELS * 4)
    path = tmp_path / "model.skops"
    await clf.save(path)
    loaded = await AsyncClassifier.load(path, executor=make.executor(), max_batch_size=16)
    assert loaded.version == 2
    assert list(loaded.classes_) == list(clf.classes_)
    assert loaded.max_batch_size == 16
    probe = ["prize", "lunch soon", "cash"]
    np.testing.assert_allclose(await loaded.predict_proba(probe), await clf.predict_proba(probe))
    await loaded.fit(TEXTS * 3, LABELS * 3)
    assert loaded.version == 3


async def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save that fails midway leaves the previous file intact and no stray files."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    await clf.save(path)
    before = path.read_bytes()

    def broken_write(obj: object, **options: object) -> bytes:
        msg = "disk on fire"
        raise OSError(msg)

    monkeypatch.setattr(sio, "dumps", broken_write)
    with pytest.raises(PersistenceError, match="disk on fire"):
        await clf.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.skops"]  # noqa: ASYNC240


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
async def test_damaged_files_raise_persistence_error(tmp_path: Path, damage: str) -> None:
    """Truncated, corrupt or empty files raise PersistenceError naming the file."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    await clf.save(path)
    data = path.read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "garbage": b"\x00junk" * 100, "empty": b""}
    path.write_bytes(damaged[damage])
    with pytest.raises(PersistenceError, match=r"model.skops is not a readable asyncclf model"):
        await AsyncClassifier.load(path)


async def test_missing_file_raises_persistence_error(tmp_path: Path) -> None:
    """A path that does not exist raises PersistenceError, not a bare OSError."""
    with pytest.raises(PersistenceError, match="Cannot read model file"):
        await AsyncClassifier.load(tmp_path / "nope.skops")


async def test_untrusted_types_are_refused_unless_named(make: Classifiers, tmp_path: Path) -> None:
    """A file holding a type outside sklearn/numpy/scipy loads only if the caller trusts it."""
    clf = await make(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    path = tmp_path / "model.skops"
    await clf.save(path)
    with pytest.raises(PersistenceError, match=r"not trusted: tests\.fakes\.KeywordClassifier"):
        await AsyncClassifier.load(path)
    loaded = await AsyncClassifier.load(path, trusted=FAKE, executor=make.executor())
    assert list(await loaded.predict(["spam spam"])) == ["spam"]


async def test_injected_callable_is_refused(tmp_path: Path) -> None:
    """A file edited to call an arbitrary function on load is refused before loading."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    path = tmp_path / "model.skops"
    await clf.save(path)
    rewrite_schema(path, '"KeywordClassifier"', '"system"')
    rewrite_schema(path, '"tests.fakes"', '"os"')
    with pytest.raises(PersistenceError, match=r"not trusted: os\.system"):
        await AsyncClassifier.load(path, trusted=FAKE)


async def test_tampered_header_is_detected(tmp_path: Path) -> None:
    """A header whose classes disagree with the estimator's raises PersistenceError."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    await clf.save(path)
    rewrite_schema(path, "'spam'", "'bacon'")
    with pytest.raises(PersistenceError, match="tampered"):
        await AsyncClassifier.load(path)


async def test_other_skops_files_are_not_models(tmp_path: Path) -> None:
    """A skops file that asyncclf did not write is refused with a clear message."""
    path = tmp_path / "plain.skops"
    sio.dump({"hello": "world"}, path)
    with pytest.raises(PersistenceError, match="not an asyncclf model"):
        await AsyncClassifier.load(path)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.InconsistentVersionWarning")
async def test_sklearn_version_mismatch_warns(tmp_path: Path) -> None:
    """Loading a file written by another scikit-learn version warns."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    await clf.save(path)
    import sklearn

    # skops stores the version string once, for the header and every estimator's stamp.
    rewrite_schema(path, f'\\"{sklearn.__version__}\\"', '\\"0.0.1\\"')
    with pytest.warns(UserWarning, match="written with scikit-learn 0.0.1"):
        await AsyncClassifier.load(path)


async def test_save_before_fit_raises(tmp_path: Path) -> None:
    """Saving an unfitted classifier raises NotFittedError and writes nothing."""
    with pytest.raises(NotFittedError):
        await AsyncClassifier().save(tmp_path / "model.skops")
    assert not list(tmp_path.iterdir())  # noqa: ASYNC240


def test_default_trusted_list_is_exactly_what_the_default_pipeline_needs() -> None:
    """DEFAULT_TRUSTED is exactly the types skops refuses in default pipelines, with
    either calibration method (sigmoid on older scikit-learn), and in the online one,
    and the neural classifier (saved as a network file, not by skops), and nothing
    more."""
    methods = ["sigmoid"]
    if "temperature" in default_estimator().get_params()["clf__method"]:
        methods.append("temperature")
    needed: set[str] = set()
    for method in methods:
        estimator = default_estimator().set_params(clf__method=method)
        estimator.fit(TEXTS * 3, LABELS * 3)
        needed |= set(sio.get_untrusted_types(data=sio.dumps(estimator)))
    online = online_estimator()
    online[-1].partial_fit(online[:-1].transform(TEXTS), LABELS, classes=sorted(set(LABELS)))
    needed |= set(sio.get_untrusted_types(data=sio.dumps(online)))
    expected = needed | {"asyncclf.neural.EmbeddingBagClassifier"}
    if methods == ["sigmoid"]:  # scikit-learn < 1.8 has no temperature scaling to save
        expected |= {"sklearn.calibration._TemperatureScaling"}
    assert set(_persistence.DEFAULT_TRUSTED) == expected


# -- malformed files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a default model file, written once for the synchronous tests."""
    estimator = default_estimator().fit(TEXTS * 3, LABELS * 3)
    path = tmp_path_factory.mktemp("model") / "model.skops"
    _persistence.dump_model(path, estimator, estimator.classes_.tolist(), 1)
    return path.read_bytes()


def edit_schema(edit: Callable[[dict[str, Any]], object]) -> Edit:
    """Return a member edit that applies ``edit`` to the parsed schema.json."""

    def apply(members: Members) -> None:
        schema = json.loads(members["schema.json"])
        edit(schema)
        members["schema.json"] = json.dumps(schema).encode()

    return apply


def header(schema: dict[str, Any]) -> dict[str, Any]:
    """Return the header's entries in a parsed schema.json."""
    entries: dict[str, Any] = schema["content"]["header"]["content"]
    return entries


def nested_lists(depth: int) -> dict[str, Any]:
    """Return a skops node of ``depth`` lists, each holding the next."""
    node: dict[str, Any] = {"__class__": "list", "__module__": "builtins", "content": []}
    node |= {"__loader__": "ListNode", "__id__": 1}
    for _ in range(depth):
        node = {**node, "content": [node]}
    return node


def first_array(members: Members) -> str:
    """Return the name of one numpy member of the archive."""
    return next(name for name in sorted(members) if name.endswith(".npy"))


CORRUPT: dict[str, tuple[Edit, type[Exception]]] = {
    "schema.json missing": (lambda m: m.pop("schema.json") and None, KeyError),
    "an array missing": (lambda m: m.pop(first_array(m)) and None, KeyError),
    "an array that is not one": (lambda m: m.update({first_array(m): b"junk"}), ValueError),
    "schema not an object": (lambda m: m.update({"schema.json": b"[]"}), AttributeError),
    "deeply nested JSON": (
        lambda m: m.update({"schema.json": b"[" * 100_000 + b"]" * 100_000}),
        RecursionError,
    ),
    "deeply nested nodes": (
        edit_schema(lambda s: s["content"].update(header=nested_lists(400))),
        RecursionError,
    ),
    "no protocol": (edit_schema(lambda s: s.pop("protocol")), TypeError),
    "a node without loader": (
        edit_schema(lambda s: header(s)["classes"].pop("__loader__")),
        KeyError,
    ),
    "a node without content": (
        edit_schema(lambda s: s["content"]["header"].pop("content")),
        KeyError,
    ),
    "a list node holding a number": (
        edit_schema(lambda s: header(s)["classes"].update(content=7)),
        TypeError,
    ),
    "a dict node holding a list": (edit_schema(lambda s: s.update(content=[])), AttributeError),
    "an unknown loader": (
        edit_schema(lambda s: header(s)["classes"].update(__loader__="NoSuchNode")),
        TypeError,
    ),
}


@pytest.mark.parametrize("damage", list(CORRUPT))
def test_malformed_archives_raise_persistence_error_chained(
    tmp_path: Path, model_bytes: bytes, damage: str
) -> None:
    """A malformed archive raises PersistenceError naming the file, chained to the cause."""
    edit, cause = CORRUPT[damage]
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    edit_members(path, edit)
    with pytest.raises(PersistenceError, match=re.escape(f"{path} is not a readable")) as info:
        _persistence.load_model(path)
    assert isinstance(info.value.__cause__, cause)


def json_node(value: object) -> dict[str, Any]:
    """Return the skops node of a JSON value, as skops writes one."""
    return {
        "__class__": type(value).__name__,
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
        "__id__": 1,
    }


MALFORMED_HEADERS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "classes missing": (lambda h: h.pop("classes") and None, "malformed header"),
    "classes a string": (lambda h: h.update(classes=json_node("'ham'")), "malformed header"),
    "format version true": (
        lambda h: h.update(format_version=json_node(True)),
        "model format version True",
    ),
}


@pytest.mark.parametrize("damage", list(MALFORMED_HEADERS))
def test_malformed_headers_raise_persistence_error(
    tmp_path: Path, model_bytes: bytes, damage: str
) -> None:
    """A header with missing or mistyped entries raises PersistenceError naming the file."""
    edit, message = MALFORMED_HEADERS[damage]
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    edit_members(path, edit_schema(lambda s: edit(header(s))))
    with pytest.raises(PersistenceError, match=re.escape(str(path)) + ".*" + message):
        _persistence.load_model(path)


async def test_an_estimator_that_is_not_a_classifier_is_refused(tmp_path: Path) -> None:
    """A well-formed file whose estimator has classes_ but cannot predict is refused."""
    path = tmp_path / "model.skops"
    fields = {"format": _persistence.FORMAT, "format_version": 1, "asyncclf_version": "0"}
    fields |= {"sklearn_version": sklearn.__version__, "model_version": 1}
    fields["classes"] = [repr(label) for label in sorted(set(LABELS))]
    sio.dump({"header": fields, "estimator": LabelEncoder().fit(LABELS)}, path)
    with pytest.raises(PersistenceError, match=r"holds a LabelEncoder, which is not a classifier"):
        await AsyncClassifier.load(path)


def test_interrupts_while_parsing_are_not_swallowed(
    tmp_path: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt raised while parsing propagates instead of becoming an error."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)

    def interrupted(**kwargs: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(sio, "get_untrusted_types", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _persistence.load_model(path)


# -- tampering: pinned digests ----------------------------------------------------------


def negate_svm_weights(path: Path) -> None:
    """Negate every coef_ and intercept_ array in the file, which stays well-formed."""

    def negate(members: Members) -> None:
        names: list[str] = []

        def visit(node: object) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in ("coef_", "intercept_") and isinstance(value, dict):
                        names.append(value["file"])
                    visit(value)
            elif isinstance(node, list):
                for value in node:
                    visit(value)

        visit(json.loads(members["schema.json"]))
        assert names
        for name in names:
            buffer = io.BytesIO()
            np.save(buffer, -np.load(io.BytesIO(members[name])))
            members[name] = buffer.getvalue()

    edit_members(path, negate)


async def test_negated_weights_load_unless_the_digest_is_pinned(
    make: Classifiers, tmp_path: Path
) -> None:
    """A file with negated SVM weights loads and flips predictions; its pinned digest refuses it."""
    clf = await default_model(make)
    path = tmp_path / "model.skops"
    digest = await clf.save(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    probe = ["free prize now", "lunch at noon", "cash prize", "see you soon"]
    before = list(await clf.predict(probe))
    negate_svm_weights(path)

    # skops checks types, not weights
    tampered = await AsyncClassifier.load(path, executor=make.executor())
    flipped = [{"spam": "ham", "ham": "spam"}[label] for label in before]
    assert list(await tampered.predict(probe)) == flipped

    with pytest.raises(PersistenceError, match=r"model.skops is not the file pinned by sha256"):
        await AsyncClassifier.load(path, sha256=digest)


async def test_pinned_digest_accepts_either_case(tmp_path: Path) -> None:
    """The digest save returned loads the file, in lower or upper case hex."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    digest = await clf.save(path)
    for pinned in (digest, digest.upper()):
        loaded = await AsyncClassifier.load(path, sha256=pinned)
        assert loaded.version == clf.version


def test_digest_is_checked_before_parsing(
    tmp_path: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that differs from its pinned digest is refused before skops reads it."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    other = hashlib.sha256(model_bytes + b"x").hexdigest()

    def unreachable(*args: object, **kwargs: object) -> object:
        pytest.fail("skops parsed a file whose digest did not match")

    monkeypatch.setattr(sio, "get_untrusted_types", unreachable)
    monkeypatch.setattr(sio, "loads", unreachable)
    with pytest.raises(PersistenceError, match="not the file pinned"):
        _persistence.load_model(path, sha256=other)


@pytest.mark.parametrize("digest", ["abc", "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, 12])
def test_malformed_digest_is_an_invalid_parameter(
    tmp_path: Path, model_bytes: bytes, digest: Any
) -> None:
    """A sha256 argument that is not 64 hex digits is a caller's error, not a bad file."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    with pytest.raises(InvalidParameterError, match="sha256 must be a SHA-256 digest of 64 hex"):
        _persistence.load_model(path, sha256=digest)


# -- size bounds --------------------------------------------------------------------------


def declared_size(data: bytes) -> int:
    """Return the sum of the uncompressed sizes an archive's members declare."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(info.file_size for info in archive.infolist())


def test_zip_bomb_is_refused_before_decompression(
    tmp_path: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file that declares more than max_size is refused before skops reads it."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    bomb = 8 * 2**20
    edit_members(path, lambda m: m.update({"bomb.npy": bytes(bomb)}), zipfile.ZIP_DEFLATED)
    data = path.read_bytes()
    assert len(data) < len(model_bytes) + bomb // 100  # it is small on disk
    limit = declared_size(model_bytes) + bomb // 2

    def unreachable(*args: object, **kwargs: object) -> object:
        pytest.fail("skops read a file that declares more than max_size")

    monkeypatch.setattr(sio, "get_untrusted_types", unreachable)
    monkeypatch.setattr(sio, "loads", unreachable)
    expected = f"would expand to {declared_size(data)} bytes, more than max_size ({limit} "
    with pytest.raises(PersistenceError, match=re.escape(expected)):
        _persistence.load_model(path, max_size=limit)


def test_compressed_members_are_refused(tmp_path: Path, model_bytes: bytes) -> None:
    """A model file whose members were recompressed is refused, whatever their sizes."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    edit_members(path, lambda m: None, zipfile.ZIP_DEFLATED)
    with pytest.raises(PersistenceError, match=r"model\.skops has compressed members"):
        _persistence.load_model(path)


def stored_zip_declaring(content: bytes, size: int, crc: int) -> zipfile.ZipFile:
    """Return an archive of one stored member whose directory declares ``size`` and ``crc``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x", content)
    data = bytearray(buffer.getvalue())
    entry = data.rfind(b"PK\x01\x02")  # the central directory entry zipfile trusts
    struct.pack_into("<II", data, entry + 16, crc, len(content))
    struct.pack_into("<I", data, entry + 24, size)
    return zipfile.ZipFile(io.BytesIO(bytes(data)))


def test_zipfile_stops_a_member_at_its_declared_size() -> None:
    """CPython reads a stored member only up to its declared size, then checks its CRC."""
    content = b"0123456789" * 100
    lying = stored_zip_declaring(content, 4, zlib.crc32(content))
    with lying as archive, pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
        archive.read("x")
    with stored_zip_declaring(content, 4, zlib.crc32(content[:4])) as archive:
        assert archive.read("x") == content[:4]


def test_zipfile_inflates_a_compressed_member_whole() -> None:
    """CPython inflates a deflated member whole before cutting it to its declared size."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x", bytes(16 * 2**20))
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 10)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        assert archive.getinfo("x").file_size == 10
        tracemalloc.start()
        try:
            with pytest.raises(zipfile.BadZipFile, match="Bad CRC-32"):
                archive.read("x")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak > 16 * 2**20


def test_max_size_bounds_the_file_itself(tmp_path: Path, model_bytes: bytes) -> None:
    """A file of max_size bytes loads; one byte less of max_size refuses it."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    assert declared_size(model_bytes) <= len(model_bytes)  # stored: the file bounds it
    _persistence.load_model(path, max_size=len(model_bytes))
    with pytest.raises(PersistenceError, match=r"model.skops is larger than max_size"):
        _persistence.load_model(path, max_size=len(model_bytes) - 1)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
def test_an_endless_file_is_read_only_up_to_max_size(tmp_path: Path) -> None:
    """Loading stops reading after max_size + 1 bytes of a file that never ends."""
    path = tmp_path / "model.skops"
    os.mkfifo(path)
    limit, total = 2**16, 2**16 + 2**23  # the pipe itself buffers at most 1 MiB
    written = 0

    def feed() -> None:
        nonlocal written
        chunk = bytes(2**12)
        with path.open("wb", buffering=0) as pipe, contextlib.suppress(BrokenPipeError):
            while written < total:
                written += pipe.write(chunk) or 0

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        with pytest.raises(PersistenceError, match="larger than max_size"):
            _persistence.load_model(path, max_size=limit)
    finally:  # if the loader never opened the pipe, open it so the writer can finish
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
    assert not writer.is_alive()
    assert written < total


def test_max_size_none_means_the_module_default(
    tmp_path: Path, model_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_size=None applies DEFAULT_MAX_SIZE as it is when load is called."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    monkeypatch.setattr(_persistence, "DEFAULT_MAX_SIZE", len(model_bytes) - 1)
    with pytest.raises(PersistenceError, match=rf"max_size \({len(model_bytes) - 1} bytes\)"):
        _persistence.load_model(path)


@pytest.mark.parametrize("max_size", [0, -1, True, 1.5, "100"])
def test_invalid_max_size_is_an_invalid_parameter(
    tmp_path: Path, model_bytes: bytes, max_size: Any
) -> None:
    """A max_size that is not a positive int is a caller's error, not a bad file."""
    path = tmp_path / "model.skops"
    path.write_bytes(model_bytes)
    with pytest.raises(InvalidParameterError, match=r"max_size must be an int >= 1"):
        _persistence.load_model(path, max_size=max_size)


# -- saving: errors, modes, links ---------------------------------------------------------


def unwritable(tmp_path: Path, kind: str) -> Path:
    """Return a path under ``tmp_path`` that cannot be written as a file, of ``kind``."""
    if kind == "path is a directory":
        (tmp_path / "dir").mkdir()
        return tmp_path / "dir"
    if kind == "parent is a file":
        (tmp_path / "file").touch()
        return tmp_path / "file" / "model.skops"
    return tmp_path / "missing" / "model.skops"


@pytest.mark.parametrize("kind", ["directory missing", "path is a directory", "parent is a file"])
async def test_unwritable_paths_raise_persistence_error(tmp_path: Path, kind: str) -> None:
    """A path that cannot be written raises PersistenceError naming it, and leaves no file."""
    clf = await default_model()
    path = unwritable(tmp_path, kind)
    before = sorted(tmp_path.rglob("*"))  # noqa: ASYNC240
    with pytest.raises(PersistenceError, match=re.escape(f"Cannot write model file {path}")):
        await clf.save(path)
    assert sorted(tmp_path.rglob("*")) == before  # noqa: ASYNC240


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
async def test_read_only_directory_raises_persistence_error(tmp_path: Path) -> None:
    """Saving into a directory without write permission raises PersistenceError."""
    clf = await default_model()
    tmp_path.chmod(0o500)  # noqa: ASYNC240
    try:
        with pytest.raises(PersistenceError, match="Cannot write model file"):
            await clf.save(tmp_path / "model.skops")
    finally:
        tmp_path.chmod(0o700)  # noqa: ASYNC240


async def test_failed_replace_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save failing at the rename keeps the old file, removes its temporary file, and says so."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    await clf.save(path)
    before = path.read_bytes()

    def refuse(source: object, target: object) -> None:
        msg = "rename refused"
        raise PermissionError(1, msg)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PersistenceError, match=r"model.skops: rename refused") as info:
        await clf.save(path)
    assert isinstance(info.value.__cause__, PermissionError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.skops"]  # noqa: ASYNC240


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o666], ids=oct)
async def test_save_keeps_the_replaced_file_mode(tmp_path: Path, mode: int) -> None:
    """Replacing a file keeps its permission bits exactly, whatever the umask."""
    clf = await default_model()
    path = tmp_path / "model.skops"
    path.write_bytes(b"old")
    path.chmod(mode)
    await clf.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert path.read_bytes() != b"old"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
async def test_new_file_mode_follows_the_umask(tmp_path: Path) -> None:
    """A new model file gets the mode open() gives a new file under the process umask."""
    clf = await default_model()
    old = os.umask(0o027)
    try:
        with (tmp_path / "plain").open("w"):
            pass
        await clf.save(tmp_path / "model.skops")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o640
    assert stat.S_IMODE((tmp_path / "model.skops").stat().st_mode) == expected


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
@pytest.mark.parametrize("existing", [True, False], ids=["target exists", "dangling link"])
async def test_save_writes_through_a_symlink(tmp_path: Path, existing: bool) -> None:
    """Saving to a symbolic link replaces its target and keeps the link."""
    clf = await default_model()
    real = tmp_path / "models" / "real.skops"
    real.parent.mkdir()
    if existing:
        real.write_bytes(b"old")
    link = tmp_path / "link.skops"
    link.symlink_to(real)
    digest = await clf.save(link)
    assert link.is_symlink()
    assert link.readlink() == real
    assert hashlib.sha256(real.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["link.skops", "models", "real.skops"]  # noqa: ASYNC240
    assert (await AsyncClassifier.load(link, sha256=digest)).version == clf.version


# -- vocabularies stored as arrays (format 2) ------------------------------------------


def fitted_default() -> Any:
    return default_estimator().fit(TEXTS * 3, LABELS * 3)


def test_vocabularies_are_stored_as_arrays_and_come_back_equal(tmp_path: Path) -> None:
    """A vectoriser's vocabulary is written as arrays, not one JSON node per term, and
    loads back equal; the serving estimator keeps its own vocabulary object."""
    estimator = fitted_default()
    vocabulary = estimator[0].vocabulary_
    path = tmp_path / "model.skops"
    _persistence.dump_model(path, estimator, sorted(set(LABELS)), 1)
    assert estimator[0].vocabulary_ is vocabulary
    schema = json.loads(zipfile.ZipFile(path).read("schema.json"))
    assert "free" not in json.dumps(schema)  # no term is a JSON node
    loaded, _, _ = _persistence.load_model(path)
    assert loaded[0].vocabulary_ == vocabulary
    probe = ["free cash prize", "lunch soon"]
    assert loaded.predict_proba(probe).tolist() == estimator.predict_proba(probe).tolist()


def test_format_1_files_still_load(tmp_path: Path) -> None:
    """A file written by the first format (vocabulary as skops nodes) still loads."""
    estimator = fitted_default()
    header = {"format": _persistence.FORMAT, "format_version": 1, "asyncclf_version": "0.1.0"}
    header |= {"sklearn_version": sklearn.__version__, "model_version": 3}
    header["classes"] = [repr(label) for label in sorted(set(LABELS))]
    path = tmp_path / "old.skops"
    sio.dump({"header": header, "estimator": estimator}, path)
    loaded, version, _ = _persistence.load_model(path)
    assert version == 3
    assert loaded[0].vocabulary_ == estimator[0].vocabulary_


VOCABULARY_DAMAGE: dict[str, Callable[[dict[str, Any]], None]] = {
    "columns repeated": lambda v: v.update(columns=np.zeros_like(v["columns"])),
    "lengths too long": lambda v: v.update(lengths=v["lengths"] + 1),
    "lengths negative": lambda v: v.update(lengths=-v["lengths"]),
    "text not utf-8": lambda v: v.update(text=np.full_like(v["text"], 0xFF)),
    "a column missing": lambda v: v.update(columns=v["columns"][:-1]),
    # One term emptied makes another valid vocabulary ("" is a term of some token
    # patterns); two make a term repeated.
    "two terms emptied": lambda v: v.update(
        lengths=np.concatenate([[0, 0, v["lengths"][:3].sum()], v["lengths"][3:]])
    ),
    "lengths that wrap around": lambda v: v.update(
        lengths=np.concatenate([[2**62, 2**62, 2**62, 2**62], v["lengths"][4:]])
    ),
    "the last term dropped throughout": lambda v: drop_last_column(v),
}


def drop_last_column(arrays: dict[str, Any]) -> None:
    """Remove the term of the highest column from the arrays, consistently."""
    last = int(np.argmax(arrays["columns"]))
    lengths = arrays["lengths"].tolist()
    text = arrays["text"].tobytes().decode("utf-8")
    start = sum(lengths[:last])
    text = text[:start] + text[start + lengths[last] :]
    arrays["text"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    arrays["lengths"] = np.delete(arrays["lengths"], last)
    arrays["columns"] = np.delete(arrays["columns"], last)


@pytest.mark.parametrize("damage", [*VOCABULARY_DAMAGE, "vocabulary dropped"])
def test_damaged_vocabularies_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    """Vocabulary arrays that do not make a vocabulary raise PersistenceError."""
    original = _persistence._pack

    def damaged_pack(estimator: Any) -> Any:
        packed, vocabularies = original(estimator)
        if damage == "vocabulary dropped":
            vocabularies.clear()
        else:
            VOCABULARY_DAMAGE[damage](vocabularies["tfidf"])
        return packed, vocabularies

    monkeypatch.setattr(_persistence, "_pack", damaged_pack)
    path = tmp_path / "model.skops"
    _persistence.dump_model(path, fitted_default(), sorted(set(LABELS)), 1)
    with pytest.raises(PersistenceError, match=re.escape(str(path))):
        _persistence.load_model(path)


@pytest.mark.parametrize("max_size", [2**40, 2**63 - 1, 2**70])
def test_a_huge_max_size_reads_the_file_as_it_is(tmp_path: Path, max_size: int) -> None:
    """A max_size beyond memory or int64 bounds nothing more: the file loads."""
    path = tmp_path / "model.skops"
    _persistence.dump_model(path, fitted_default(), sorted(set(LABELS)), 1)
    _persistence.load_model(path, max_size=max_size)


def test_a_vocabulary_with_lone_surrogates_saves_and_loads(tmp_path: Path) -> None:
    """Terms holding lone surrogates (a char analyser on such text) round-trip."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["ab\udc80c", "xyz", "ab\udc80c xyz", "zzz"]
    estimator = make_pipeline(TfidfVectorizer(analyzer="char"), KeywordClassifier())
    estimator.fit(texts, ["a", "b", "a", "b"])
    path = tmp_path / "model.skops"
    _persistence.dump_model(path, estimator, ["a", "b"], 1)
    loaded, _, _ = _persistence.load_model(path, trusted=FAKE)
    assert loaded[0].vocabulary_ == estimator[0].vocabulary_


def test_a_vocabulary_holding_the_empty_term_round_trips(tmp_path: Path) -> None:
    """token_pattern=r"\\w*" makes "" a term: the file saved loads, the same model."""
    estimator = make_pipeline(TfidfVectorizer(token_pattern=r"\w*"), LinearSVC())
    estimator.fit(["red fish", "blue fish", "red", "blue"], ["r", "b", "r", "b"])
    assert "" in estimator[0].vocabulary_
    path = tmp_path / "model.skops"
    _persistence.dump_model(path, estimator, estimator.classes_.tolist(), 1)
    loaded, _, _ = _persistence.load_model(path)
    assert loaded[0].vocabulary_ == estimator[0].vocabulary_


def test_a_path_holding_nul_is_a_persistence_error() -> None:
    """An impossible path is a PersistenceError, like any file that cannot be read."""
    with pytest.raises(PersistenceError, match="Cannot read model file"):
        _persistence.load_model("model\x00.skops")


def test_a_regular_file_larger_than_max_size_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file is refused by its size before any of it is read."""
    path = tmp_path / "model.skops"
    with path.open("wb") as file:
        file.truncate(2**30)  # sparse: 1 GiB that takes no disk
    monkeypatch.setattr(_persistence, "_read_at_most", None)  # reading would fail
    with pytest.raises(PersistenceError, match="larger than max_size"):
        _persistence.load_model(path, max_size=2**20)
