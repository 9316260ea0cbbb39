"""Safe model files: round trips, atomic saves, and refusals of bad or untrusted files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio

from asyncclf import AsyncClassifier, NotFittedError, PersistenceError, _persistence

from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

pytestmark = pytest.mark.anyio

TEXTS = ["free prize now", "lunch at noon", "cash cash prize", "see you soon"]
LABELS = ["spam", "ham", "spam", "ham"]
FAKE = ["tests.fakes.KeywordClassifier"]


async def default_model() -> AsyncClassifier:
    return await AsyncClassifier().fit(TEXTS * 3, LABELS * 3)


def rewrite_schema(path: Path, old: str, new: str) -> None:
    """Edit the JSON inside a skops archive, as an attacker with the file could."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = members["schema.json"].decode()
    assert old in schema
    members["schema.json"] = schema.replace(old, new).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


async def test_round_trip_keeps_predictions_classes_and_version(tmp_path: Path) -> None:
    """save then load gives the same probabilities, classes and model version."""
    clf = await default_model()
    await clf.fit(TEXTS * 4, LABELS * 4)
    path = tmp_path / "model.skops"
    await clf.save(path)
    loaded = await AsyncClassifier.load(path, max_batch_size=16)
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

    def broken_write(obj: object) -> bytes:
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


async def test_untrusted_types_are_refused_unless_named(tmp_path: Path) -> None:
    """A file holding a type outside sklearn/numpy/scipy loads only if the caller trusts it."""
    clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
    path = tmp_path / "model.skops"
    await clf.save(path)
    with pytest.raises(PersistenceError, match=r"not trusted: tests\.fakes\.KeywordClassifier"):
        await AsyncClassifier.load(path)
    loaded = await AsyncClassifier.load(path, trusted=FAKE)
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


def test_default_trusted_list_is_minimal() -> None:
    """Only the calibration internals of the default pipeline are trusted beyond skops'."""
    assert all(name.startswith("sklearn.") for name in _persistence.DEFAULT_TRUSTED)
