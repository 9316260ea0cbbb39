"""AsyncClassifier with a network (asyncclf.neural): every kind of call and online
learning, model files of safetensors weights and JSON (the same checks and
PersistenceError as skops files, no pickle), model ids, and torch's threads capped
like BLAS and OpenMP."""

from __future__ import annotations

import itertools
import json
import pickle
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

from .fakes import DEADLINE  # noqa: E402

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["ham", "spam"]


@pytest.fixture(scope="module")
def sms() -> tuple[list[str], list[str]]:
    texts, labels = load_sms_spam()
    return texts[:400], labels[:400]


def network() -> EmbeddingBagClassifier:
    return EmbeddingBagClassifier(
        n_buckets=2**12,
        embedding_dim=8,
        batch_size=32,
        max_epochs=2,
        validation_fraction=None,
        random_state=0,
    )


def header_of(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header of the safetensors file ``data``, and where the arrays start."""
    size = int.from_bytes(data[:8], "little")
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header, 8 + size


def rewritten(path: Path, change: Any) -> bytes:
    """The network file at ``path`` with its metadata changed by ``change(metadata)``."""
    data = path.read_bytes()
    header, start = header_of(data)
    change(header["__metadata__"])
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + data[start:]


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pickle's and torch's loading functions raise."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        msg = "unpickled"
        raise AssertionError(msg)  # pragma: no cover - the test fails here

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)


# -- served by AsyncClassifier -----------------------------------------------------------


async def test_async_classifier_fits_and_serves_every_kind_of_call(
    sms: tuple[list[str], list[str]],
) -> None:
    """AsyncClassifier fits the network in a worker and answers concurrent classify
    calls, stream, rank and group with the probabilities of one vectorised predict."""
    texts, labels = sms
    clf: AsyncClassifier[str] = AsyncClassifier(network())
    with anyio.fail_after(DEADLINE):
        await clf.fit(texts[:300], labels[:300])
        held_out = texts[300:400]
        expected = clf.estimator_.predict_proba(held_out)
        best = expected.argmax(axis=1)
        got: dict[int, Any] = {}

        async def classify(index: int) -> None:
            got[index] = await clf.classify(held_out[index])

        async with anyio.create_task_group() as tasks:
            for index in range(len(held_out)):
                tasks.start_soon(classify, index)
        assert [got[i].label for i in range(len(held_out))] == [CLASSES[j] for j in best]
        np.testing.assert_allclose(
            [got[i].score for i in range(len(held_out))], expected.max(axis=1), rtol=1e-5
        )
        async with clf.stream(held_out) as results:
            streamed = [prediction async for prediction in results]
        assert [p.index for p in streamed] == list(range(len(held_out)))
        assert [p.label for p in streamed] == [CLASSES[j] for j in best]
        ranked = await clf.rank(held_out, "spam", k=5)
        order = np.argsort(-expected[:, 1], kind="stable")[:5]
        assert [r.index for r in ranked] == order.tolist()
        groups = await clf.group(held_out)
        assert set(groups) <= set(CLASSES)
        for label, members in groups.items():
            indices = np.flatnonzero(best == CLASSES.index(label)).tolist()
            assert sorted(r.index for r in members) == indices


async def test_async_classifier_learns_online_and_updates_with_partial_fit(
    sms: tuple[list[str], list[str]],
) -> None:
    """learn trains the network from a stream of examples (test, then train),
    publishing copies while it serves; partial_fit then updates the served copy."""
    texts, labels = sms
    clf: AsyncClassifier[str] = AsyncClassifier(network())
    with anyio.fail_after(DEADLINE):
        async with clf.learn(
            list(zip(texts[:300], labels[:300], strict=True)),
            classes=CLASSES,
            batch_size=50,
            publish_every=100,
        ) as reports:
            seen = [report async for report in reports]
        assert seen[-1].seen == 300
        assert [r.seen for r in seen if r.published][-1] == 300
        assert clf.version == sum(report.published for report in seen) == 3
        served = clf.estimator_
        epochs = len(served.net_.history)
        await clf.partial_fit(texts[300:400], labels[300:400])
        assert clf.version == 4
        assert len(clf.estimator_.net_.history) == epochs + 1
        assert len(served.net_.history) == epochs  # the old model was copied, not changed


# -- model files ------------------------------------------------------------------------


async def test_a_network_file_is_a_json_header_and_raw_arrays_that_load_without_pickle(
    sms: tuple[list[str], list[str]], tmp_path: Path, no_pickle: None
) -> None:
    """save writes safetensors: a JSON header (asyncclf's header, the estimator's type
    and its description) and the arrays' bytes end to end, nothing else; with
    unpickling forbidden it loads, pinned by its digest, and swaps in, with the same
    version, id and probabilities."""
    texts, labels = sms
    clf = await AsyncClassifier(network()).fit(texts, labels)
    path = tmp_path / "network.model"
    digest = await clf.save(path)
    data = path.read_bytes()
    header, start = header_of(data)
    metadata = header.pop("__metadata__")
    assert metadata["estimator"] == "asyncclf.neural.EmbeddingBagClassifier"
    assert json.loads(metadata["asyncclf-model"])["model_id"] == clf.model_id
    description = json.loads(metadata["description"])
    assert (description["classes"], description["params"]["n_buckets"]) == (CLASSES, 2**12)
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0
    assert all(end == begin for (_, end), (begin, _) in itertools.pairwise(spans))
    assert spans[-1][1] == len(data) - start
    assert header["embedding.weight"]["shape"] == [2**12, 8]
    loaded = await AsyncClassifier.load(path, sha256=digest)
    assert (loaded.version, loaded.model_id) == (1, clf.model_id)
    assert loaded.estimator_.get_params() == clf.estimator_.get_params()
    probe = texts[:50]
    np.testing.assert_array_equal(await loaded.predict_proba(probe), await clf.predict_proba(probe))
    swapped = await AsyncClassifier().fit(texts, labels)
    await swapped.swap(path)
    assert (swapped.version, swapped.model_id) == (2, clf.model_id)


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the process is the same on trio
async def test_a_network_loads_in_a_fresh_process_without_pickle(
    sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """A fresh process whose pickle refuses any use, and any name an unpickler would
    look up, loads the file with the same version, id and scores."""
    texts, labels = sms
    clf = await AsyncClassifier(network()).fit(texts, labels)
    path = tmp_path / "network.model"
    digest = await clf.save(path)
    probe = ["WINNER! claim your free prize now", "see you at lunch"]
    expected = (await clf.predict_proba(probe)).tolist()
    script = textwrap.dedent(
        f"""
        import json, pickle, sys, anyio
        import asyncclf, asyncclf.neural  # imports first: torch's own use pickle classes
        def refuse(*args, **kwargs):
            raise AssertionError("pickle used")
        class Refusing(pickle.Unpickler):  # torch subclasses Unpickler on import
            load = refuse
        def audit(event, args):
            # Unpickling anything but plain data looks a name up: refuse every one.
            if event == "pickle.find_class":
                raise AssertionError(f"unpickled {{args}}")
        pickle.load = pickle.loads = refuse
        pickle.Unpickler = Refusing
        sys.addaudithook(audit)
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
        "header size": (b"\xff" * 8 + path.read_bytes()[8:], "not a readable.*or truncated"),
        "seven bytes": (path.read_bytes()[:7], "not a readable.*or truncated"),
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
        msg = "an embedding table was built"
        raise AssertionError(msg)

    monkeypatch.setattr(torch.nn.EmbeddingBag, "__init__", built)
    with pytest.raises(PersistenceError, match="do not match the network"):
        await AsyncClassifier.load(tmp_path / "bomb.model")


async def test_numpy_settings_save_and_hash(
    sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Settings given as numpy scalars (from a parameter grid) save, load and have a
    stable id."""
    estimator = network().set_params(n_buckets=np.int64(2**12), lr=np.float32(0.3))
    clf = await AsyncClassifier(estimator).fit(*sms)
    assert (
        fingerprint.fingerprint(clf.estimator_)
        == fingerprint.fingerprint(clf.estimator_)
        == clf.model_id
    )
    await clf.save(tmp_path / "numpy.model")
    assert (await AsyncClassifier.load(tmp_path / "numpy.model")).model_id == clf.model_id


# -- identity, threads and concurrent fits ----------------------------------------------


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
