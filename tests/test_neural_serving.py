"""AsyncClassifier with a network (asyncclf.neural): model files of safetensors weights
and JSON (the same checks and PersistenceError as skops files, no pickle), model ids,
and torch's threads capped like BLAS and OpenMP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

torch: Any = pytest.importorskip(
    "torch", reason="asyncclf.neural needs PyTorch: pip install 'asyncclf[torch]'"
)
pytest.importorskip("skorch", reason="asyncclf.neural needs skorch: pip install 'asyncclf[torch]'")
pytest.importorskip("safetensors", reason="pip install 'asyncclf[torch]'")

from asyncclf import AsyncClassifier, PersistenceError, load_sms_spam  # noqa: E402
from asyncclf._work import fingerprint, threads  # noqa: E402
from asyncclf.neural import EmbeddingBagClassifier  # noqa: E402

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sms() -> tuple[list[str], list[str]]:
    texts, labels = load_sms_spam()
    return texts[:600], labels[:600]


def network() -> EmbeddingBagClassifier:
    return EmbeddingBagClassifier(
        n_buckets=2**12, embedding_dim=8, max_epochs=2, validation_fraction=None, random_state=0
    )


def rewritten(path: Path, change: Any) -> bytes:
    """The network file at ``path`` with its metadata changed by ``change(metadata)``."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    change(header["__metadata__"])
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + size :]


async def test_a_network_saves_as_safetensors_and_loads_in_a_fresh_process_without_pickle(
    sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """save writes safetensors (no zip, no pickle); a fresh process whose pickle is
    disabled loads it, pinned by its digest, with the same version, id and scores."""
    texts, labels = sms
    clf = await AsyncClassifier(network()).fit(texts, labels)
    path = tmp_path / "network.model"
    digest = await clf.save(path)
    data = path.read_bytes()
    assert data[:2] != b"PK"
    assert b"asyncclf-model" in data[: 8 + int.from_bytes(data[:8], "little")]
    probe = ["WINNER! claim your free prize now", "see you at lunch"]
    expected = (await clf.predict_proba(probe)).tolist()
    script = textwrap.dedent(
        f"""
        import json, pickle, anyio
        import asyncclf, asyncclf.neural  # imports first: torch's own use pickle classes
        def refuse(*args, **kwargs):
            raise AssertionError("pickle used")
        class Refusing(pickle.Unpickler):  # torch subclasses Unpickler on import
            load = refuse
        pickle.load = pickle.loads = refuse
        pickle.Unpickler = Refusing
        async def main():
            clf = await asyncclf.AsyncClassifier.load({str(path)!r}, sha256={digest!r})
            scores = (await clf.predict_proba({probe!r})).tolist()
            print(json.dumps([clf.version, clf.model_id, type(clf.estimator_).__name__, scores]))
        anyio.run(main)
        """
    )
    command = [sys.executable, "-c", script]
    done = await anyio.to_thread.run_sync(
        partial(subprocess.run, command, capture_output=True, text=True, cwd=ROOT, check=False)
    )
    assert done.returncode == 0, done.stderr
    version, model_id, kind, scores = json.loads(done.stdout.splitlines()[-1])
    assert (version, model_id, kind) == (1, clf.model_id, "EmbeddingBagClassifier")
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    swapped = await AsyncClassifier().fit(texts, labels)
    await swapped.swap(path)
    assert (swapped.version, swapped.model_id) == (2, clf.model_id)


async def test_damaged_or_untrusted_network_files_are_persistence_errors(
    sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Another class named in the file, classes that differ from the weights', a bad
    header, truncation or weights of another shape: each a PersistenceError."""
    clf = await AsyncClassifier(network()).fit(*sms)
    path = tmp_path / "network.model"
    await clf.save(path)

    def entry(name: str, change: Any) -> Any:
        """A change of the metadata entry ``name``, a JSON object."""

        def rewrite(metadata: dict[str, str]) -> None:
            content = json.loads(metadata[name])
            change(content)
            metadata[name] = json.dumps(content)

        return rewrite

    def header(change: Any) -> Any:
        return entry("asyncclf-model", change)

    def description(change: Any) -> Any:
        return entry("description", change)

    damages: dict[str, tuple[bytes, str]] = {
        "class": (
            rewritten(path, lambda m: m.update(estimator="os.system")),
            "of type os.system, which is not trusted",
        ),
        "classes": (
            rewritten(path, header(lambda h: h.update(classes=["'a'", "'b'"]))),
            "is inconsistent",
        ),
        "version": (
            rewritten(path, header(lambda h: h.update(model_version=0))),
            "invalid model version",
        ),
        "format": (
            rewritten(path, header(lambda h: h.update(format_version=99))),
            "format version 99",
        ),
        "shape": (
            rewritten(path, description(lambda d: d["network"].update(embedding_dim=9))),
            "not a readable.*does not match",
        ),
        "truncated": (path.read_bytes()[:-100], "not a readable"),
        "no header": (
            rewritten(path, lambda m: m.pop("asyncclf-model")),
            "not an asyncclf model",
        ),
    }
    for name, (data, match) in damages.items():
        damaged = tmp_path / f"{name}.model"
        damaged.write_bytes(data)
        with pytest.raises(PersistenceError, match=match):
            await AsyncClassifier.load(damaged)


async def test_a_network_has_a_stable_id_that_its_training_decides(
    sms: tuple[list[str], list[str]],
) -> None:
    """The same seeded fit gives the same id, read again the same; other data another."""
    first = await AsyncClassifier(network()).fit(*sms)
    second = await AsyncClassifier(network()).fit(*sms)
    assert first.model_id == second.model_id == fingerprint.fingerprint(first.estimator_)
    texts, labels = sms
    other = await AsyncClassifier(network()).fit(texts[:-50], labels[:-50])
    assert other.model_id != first.model_id


def test_torch_threads_are_capped_per_call_even_after_set_num_threads() -> None:
    """A count set with torch.set_num_threads is capped in a worker call, and restored
    after it, in a thread torch has not run in yet (where torch re-applies it)."""
    seen: list[tuple[int, int]] = []
    before = torch.get_num_threads()

    def worker() -> None:
        with threads._native_thread_cap(1):
            inside = torch.get_num_threads()
        seen.append((inside, torch.get_num_threads()))

    try:
        torch.set_num_threads(2)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, 2)]


async def test_a_file_declaring_a_huge_network_is_refused_before_it_is_built(
    sms: tuple[list[str], list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The weights' shapes are checked against the declared network before anything is
    built: a small file cannot make the loader allocate a huge table."""
    clf = await AsyncClassifier(network()).fit(*sms)
    path = tmp_path / "network.model"
    await clf.save(path)

    def declare(metadata: dict[str, str]) -> None:
        content = json.loads(metadata["description"])
        content["params"]["n_buckets"] = content["network"]["n_buckets"] = 2**30
        metadata["description"] = json.dumps(content)

    (tmp_path / "bomb.model").write_bytes(rewritten(path, declare))

    def built(*args: Any, **kwargs: Any) -> Any:
        msg = "a network was built"
        raise AssertionError(msg)

    monkeypatch.setattr(EmbeddingBagClassifier, "_new_net", built)
    with pytest.raises(PersistenceError, match="do not match the network"):
        await AsyncClassifier.load(tmp_path / "bomb.model")


async def test_numpy_settings_save_and_hash_and_ngrams_are_bounded(
    sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Settings given as numpy scalars (from a parameter grid) save and have a stable
    id; word_ngrams beyond 8 (whose cost grows with its square) is refused."""
    estimator = network().set_params(n_buckets=np.int64(2**12), lr=np.float32(0.3))
    clf = await AsyncClassifier(estimator).fit(*sms)
    assert (
        fingerprint.fingerprint(clf.estimator_)
        == fingerprint.fingerprint(clf.estimator_)
        == clf.model_id
    )
    await clf.save(tmp_path / "numpy.model")
    assert (await AsyncClassifier.load(tmp_path / "numpy.model")).model_id == clf.model_id
    with pytest.raises(ValueError, match="word_ngrams must be at most 8"):
        await AsyncClassifier(network().set_params(word_ngrams=9)).fit(*sms)


async def test_concurrent_seeded_fits_with_dropout_make_the_same_model(
    sms: tuple[list[str], list[str]],
) -> None:
    """Fits running at once, and predictions meanwhile, leave each other's seeded
    streams and torch's global generator alone."""
    settings = {"hidden_layer_sizes": (8,), "dropout": 0.3}
    alone = await AsyncClassifier(network().set_params(**settings)).fit(*sms)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    together: list[str] = []

    async def fit() -> None:
        clf = await AsyncClassifier(network().set_params(**settings)).fit(*sms)
        await clf.predict_proba(sms[0][:50])
        together.append(clf.model_id)

    async with anyio.create_task_group() as tasks:
        for _ in range(3):
            tasks.start_soon(fit)
    assert together == [alone.model_id] * 3
    assert torch.equal(torch.rand(3), expected)
