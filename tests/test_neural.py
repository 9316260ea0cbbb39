"""EmbeddingBagClassifier: a fastText-style network trained with skorch, a scikit-learn
classifier that AsyncClassifier serves, learns with and saves without pickle."""

from __future__ import annotations

import copy
import inspect
import io
import itertools
import json
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks
from threadpoolctl import threadpool_limits

torch: Any = pytest.importorskip(
    "torch", reason="asyncclf.neural needs PyTorch: pip install 'asyncclf[torch]'"
)
pytest.importorskip("skorch", reason="asyncclf.neural needs skorch: pip install 'asyncclf[torch]'")
pytest.importorskip(
    "safetensors", reason="asyncclf.neural needs safetensors: pip install 'asyncclf[torch]'"
)

from asyncclf import (  # noqa: E402 - only once torch is known to be there
    AsyncClassifier,
    InvalidParameterError,
    PersistenceError,
    load_sms_spam,
)
from asyncclf.neural import (  # noqa: E402
    EmbeddingBagClassifier,
    load_network,
    save_network,
)

pytestmark = pytest.mark.anyio

FIXTURE = Path(__file__).parent / "data" / "mixed_scripts.jsonl"
CLASSES = ["ham", "spam"]


def small(**params: Any) -> EmbeddingBagClassifier:
    """A network small enough to train in a fraction of a second."""
    settings: dict[str, Any] = {
        "n_buckets": 2**14,
        "embedding_dim": 16,
        "optimizer": "adagrad",
        "lr": 0.2,
        "max_epochs": 3,
        "random_state": 0,
    }
    return EmbeddingBagClassifier(**(settings | params))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch on one OpenMP thread in the test's own thread, as asyncclf's workers
    do: tiny networks only lose to thread handoffs on a busy two-core machine."""
    with threadpool_limits(1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def sms() -> tuple[list[str], list[str]]:
    """The bundled SMS spam collection."""
    return load_sms_spam()


@pytest.fixture(scope="module")
def fitted(sms: tuple[list[str], list[str]]) -> EmbeddingBagClassifier:
    """A small network trained on 1,500 messages (shared: tests must not change it)."""
    texts, labels = sms
    with threadpool_limits(1, user_api="openmp"):
        return small().fit(texts[:1500], labels[:1500])


# -- scikit-learn compatibility ---------------------------------------------------------


def test_hyperparameters_are_stored_verbatim_and_clone_is_unfitted(
    fitted: EmbeddingBagClassifier,
) -> None:
    """get_params lists every __init__ argument as given; clone copies them and no
    fitted state, cheaply (no network is built before fit)."""
    estimator = EmbeddingBagClassifier(hidden_layer_sizes=[8], lr=0.05, random_state=3)
    params = estimator.get_params()
    assert params["hidden_layer_sizes"] == [8]
    assert params["lr"] == 0.05
    assert set(params) == set(inspect.signature(EmbeddingBagClassifier).parameters)
    copied = clone(fitted)
    assert copied.get_params() == fitted.get_params()
    assert not hasattr(copied, "net_")
    assert not hasattr(copied, "classes_")
    assert estimator.set_params(dropout=0.5).dropout == 0.5


@pytest.mark.parametrize(
    "check",
    [
        "check_parameters_default_constructible",
        "check_no_attributes_set_in_init",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimator_repr",
        "check_estimator_cloneable",
        "check_do_not_raise_errors_in_init_or_set_params",
        "check_estimators_unfitted",
        "check_mixin_order",
    ],
)
def test_sklearn_estimator_checks_that_need_no_numeric_data(check: str) -> None:
    """scikit-learn's own checks of the estimator protocol pass (those feeding numeric
    arrays do not apply to a text classifier)."""
    function = getattr(estimator_checks, check, None)
    if function is None:
        pytest.skip(f"this scikit-learn has no {check}")
    function("EmbeddingBagClassifier", small())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_buckets", 0),
        ("embedding_dim", 2.5),
        ("word_ngrams", 0),
        ("hidden_layer_sizes", "8"),
        ("dropout", 1.0),
        ("optimizer", "rmsprop"),
        ("lr", 0),
        ("lr", True),
        ("validation_fraction", 1.5),
        ("patience", 0),
        ("device", "tpu"),
    ],
)
def test_bad_hyperparameters_are_refused_by_fit_naming_them(name: str, value: Any) -> None:
    """fit raises InvalidParameterError (a ValueError) naming the bad hyperparameter."""
    with pytest.raises(InvalidParameterError, match=name):
        small(**{name: value}).fit(["a b", "c d"], ["x", "y"])


# -- fitting and predicting -------------------------------------------------------------


def test_fit_predicts_held_out_messages(
    fitted: EmbeddingBagClassifier, sms: tuple[list[str], list[str]]
) -> None:
    """Trained on 1,500 messages it classifies 1,000 others well; predict is the argmax
    of predict_proba, whose rows sum to one, in classes_ order."""
    texts, labels = sms
    held_out, truth = texts[3000:4000], np.array(labels[3000:4000])
    proba = fitted.predict_proba(held_out)
    assert proba.shape == (1000, 2)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert list(fitted.classes_) == CLASSES
    predicted = fitted.predict(held_out)
    assert list(predicted) == list(fitted.classes_[proba.argmax(axis=1)])
    assert np.mean(predicted == truth) > 0.95
    assert fitted.predict_proba([]).shape == (0, 2)


def test_early_stopping_ends_training_when_validation_stops_improving(
    sms: tuple[list[str], list[str]],
) -> None:
    """With a validation split, training stops once the validation loss has not
    improved for `patience` epochs, well before max_epochs."""
    texts, labels = sms
    estimator = small(lr=1.0, max_epochs=30, patience=2).fit(texts[:800], labels[:800])
    losses = estimator.net_.history[:, "valid_loss"]
    assert len(losses) < 30
    assert min(losses[-2:]) >= min(losses[:-2])  # the last two epochs did no better


def test_labels_of_any_kind_come_back_as_given() -> None:
    """classes_ holds the original labels, sorted when they sort (ints here), and
    predict returns them, not the network's internal indices."""
    texts = ["rain wind storm", "sun heat dry", "rice soup noodles"] * 10
    labels = [30, 10, 20] * 10
    estimator = small(validation_fraction=None, patience=None, max_epochs=15)
    estimator.fit(texts, labels)
    assert estimator.classes_.tolist() == [10, 20, 30]
    assert estimator.predict(["storm and rain", "soup"]).tolist() == [30, 20]
    mixed = small(validation_fraction=None, patience=None, max_epochs=15)
    mixed.fit(texts, ["wet", 1, ("dish",)] * 10)
    assert mixed.classes_.tolist() == ["wet", 1, ("dish",)]  # unsortable: as first seen
    assert mixed.predict(["noodles"]).tolist() == [("dish",)]


def test_random_state_makes_fits_reproducible(sms: tuple[list[str], list[str]]) -> None:
    """Two fits with the same random_state give identical probabilities (dropout
    included); another random_state gives others."""
    texts, labels = sms
    train, test = (texts[:600], labels[:600]), texts[600:700]
    one = small(dropout=0.2, hidden_layer_sizes=(8,)).fit(*train).predict_proba(test)
    two = small(dropout=0.2, hidden_layer_sizes=(8,)).fit(*train).predict_proba(test)
    other = small(dropout=0.2, hidden_layer_sizes=(8,), random_state=1).fit(*train)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other.predict_proba(test))


def test_fit_leaves_torch_global_state_alone(sms: tuple[list[str], list[str]]) -> None:
    """Training changes neither torch's thread count nor its global random state."""
    texts, labels = sms
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    small(dropout=0.1).fit(texts[:300], labels[:300])
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_chinese_and_other_unspaced_scripts_are_learned() -> None:
    """Texts without spaces are cut into character n-grams (the default pipeline's
    tokeniser), so a network learns Chinese, Japanese and Thai from a few sentences."""
    rows = [json.loads(line) for line in FIXTURE.read_text("utf-8").splitlines()]
    estimator = small(validation_fraction=None, patience=None, max_epochs=40, lr=0.5)
    estimator.fit([row["text"] for row in rows], [row["label"] for row in rows])
    assert estimator.predict(["米饭和面条", "明天下雨", "雨が強い", "ข้าวอร่อย"]).tolist() == [
        "food",
        "weather",
        "weather",
        "food",
    ]


def test_cuda_that_is_not_there_is_a_clear_error() -> None:
    """device="cuda" on a machine without CUDA fails at fit with a message saying so."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the error cannot happen")
    with pytest.raises(InvalidParameterError, match="CUDA is not available"):
        small(device="cuda").fit(["a b", "c d"], ["x", "y"])


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
def test_training_and_predicting_on_a_gpu(sms: tuple[list[str], list[str]]) -> None:
    """On a GPU the network trains and predicts there, and loads back onto the CPU."""
    texts, labels = sms
    estimator = small(device="cuda").fit(texts[:1500], labels[:1500])
    assert next(estimator.net_.module_.parameters()).is_cuda
    proba = estimator.predict_proba(texts[3000:3200])
    assert np.mean(estimator.predict(texts[3000:3200]) == np.array(labels[3000:3200])) > 0.9
    file = io.BytesIO()
    save_network(file, estimator)
    file.seek(0)
    on_cpu = load_network(file, device="cpu")
    np.testing.assert_allclose(on_cpu.predict_proba(texts[3000:3200]), proba, atol=1e-5)


# -- partial_fit ------------------------------------------------------------------------


def test_partial_fit_needs_classes_first_then_learns_one_pass_a_call(
    sms: tuple[list[str], list[str]],
) -> None:
    """The first partial_fit needs classes; each call is one epoch (no validation
    split), continuing from the weights before; labels outside the classes, or other
    classes, are refused."""
    texts, labels = sms
    estimator = small()
    with pytest.raises(ValueError, match=r"needs classes=\[\.\.\.\]"):
        estimator.partial_fit(texts[:10], labels[:10])
    for start in range(0, 1500, 300):
        estimator.partial_fit(
            texts[start : start + 300], labels[start : start + 300], classes=CLASSES
        )
    history = estimator.net_.history
    assert len(history) == 5
    assert not any("valid_loss" in epoch for epoch in history)
    assert list(estimator.classes_) == CLASSES
    truth = np.array(labels[3000:3500])
    assert np.mean(estimator.predict(texts[3000:3500]) == truth) > 0.95
    with pytest.raises(ValueError, match="'eggs', which is not one of the classes"):
        estimator.partial_fit(["text"], ["eggs"])
    with pytest.raises(ValueError, match="differs from the classes already learned"):
        estimator.partial_fit(["text"], ["ham"], classes=["ham", "eggs"])


def test_partial_fit_after_fit_continues_without_validation(
    fitted: EmbeddingBagClassifier, sms: tuple[list[str], list[str]]
) -> None:
    """partial_fit on a network trained by fit adds one plain epoch and changes the
    weights; the copy it started from is untouched."""
    texts, labels = sms
    estimator = copy.deepcopy(fitted)
    # The copy's optimiser steps the copy's own parameters.
    stepped = {id(p) for group in estimator.net_.optimizer_.param_groups for p in group["params"]}
    assert stepped == {id(p) for p in estimator.net_.module_.parameters()}
    before = fitted.predict_proba(texts[3000:3100])
    estimator.partial_fit(texts[1500:1700], labels[1500:1700])
    assert len(estimator.net_.history) == len(fitted.net_.history) + 1
    assert "valid_loss" not in estimator.net_.history[-1]
    assert not np.array_equal(estimator.predict_proba(texts[3000:3100]), before)
    np.testing.assert_array_equal(fitted.predict_proba(texts[3000:3100]), before)


# -- saving without pickle --------------------------------------------------------------


def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pickle's and torch's loading functions raise (the fresh-process test also
    refuses every name an unpickler looks up)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        msg = "unpickled"
        raise AssertionError(msg)  # pragma: no cover - the test fails here

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_save_and_load_keep_probabilities_without_pickle(
    fitted: EmbeddingBagClassifier,
    sms: tuple[list[str], list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A saved network loads, through a path or a file object, with unpickling
    forbidden, to identical probabilities, classes and hyperparameters."""
    texts = sms[0][3000:3300]
    path = tmp_path / "network.safetensors"
    save_network(path, fitted)
    file = io.BytesIO()
    save_network(file, fitted)
    assert file.getvalue() == path.read_bytes()
    no_pickle(monkeypatch)
    for source in (path, io.BytesIO(file.getvalue())):
        loaded = load_network(source)
        np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
        assert loaded.classes_.tolist() == fitted.classes_.tolist()
        assert loaded.get_params() == fitted.get_params()


def test_the_file_holds_a_json_header_and_raw_arrays_only(
    fitted: EmbeddingBagClassifier, tmp_path: Path
) -> None:
    """The file is safetensors: a JSON header (the description in its metadata) and the
    arrays' bytes end to end, with no byte left over for anything else."""
    path = tmp_path / "network.safetensors"
    save_network(path, fitted)
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    description = json.loads(header.pop("__metadata__")["asyncclf-network"])
    assert description["classes"] == CLASSES
    assert description["params"]["n_buckets"] == 2**14
    spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
    assert spans[0][0] == 0
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))
    assert spans[-1][1] == len(data) - 8 - size
    shapes = {name: entry["shape"] for name, entry in header.items()}
    assert shapes["embedding.weight"] == [2**14, 16]


def test_a_saved_network_loads_in_a_fresh_process_without_pickle(
    fitted: EmbeddingBagClassifier, sms: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Another Python process, whose pickle raises on any use, loads the file and
    predicts exactly the probabilities of the network that was saved."""
    texts = sms[0][3000:3050]
    path = tmp_path / "network.safetensors"
    save_network(path, fitted)
    (tmp_path / "texts.json").write_text(json.dumps(texts), "utf-8")
    script = textwrap.dedent(
        """
        import json, pickle, sys

        from asyncclf.neural import load_network

        def refuse(*args, **kwargs):
            raise AssertionError("unpickled")

        def audit(event, args):
            # Unpickling anything but plain data looks a name up: refuse every one.
            if event == "pickle.find_class":
                raise AssertionError(f"unpickled {args}")

        pickle.load = pickle.loads = refuse
        sys.addaudithook(audit)

        loaded = load_network(sys.argv[1])
        texts = json.load(open(sys.argv[2], encoding="utf-8"))
        print(json.dumps(loaded.predict_proba(texts).tolist()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "texts.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.array(json.loads(done.stdout)), fitted.predict_proba(texts))


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-4],
        lambda data: b"\xff" * 8 + data[8:],
        lambda data: data.replace(b'n_buckets\\": 16384', b'n_buckets\\": 16385'),
        lambda data: data.replace(
            b"asyncclf.neural.EmbeddingBagClassifier", b"os.system" + b" " * 29
        ),
    ],
    ids=["truncated", "header-size", "shape-mismatch", "other-class"],
)
def test_damaged_files_raise_persistence_error(
    fitted: EmbeddingBagClassifier, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """A truncated file, a wrong header, weights of another shape or a description of
    another class raise PersistenceError."""
    path = tmp_path / "network.safetensors"
    save_network(path, fitted)
    damaged = damage(path.read_bytes())
    assert damaged != path.read_bytes()
    with pytest.raises(PersistenceError, match="not a network saved by"):
        load_network(io.BytesIO(damaged))


def test_unfitted_and_unsavable_networks_are_refused(fitted: EmbeddingBagClassifier) -> None:
    """Saving needs a fitted network whose classes JSON keeps as they are."""
    with pytest.raises(Exception, match="not fitted"):
        save_network(io.BytesIO(), small())
    tupled = copy.deepcopy(fitted)
    tupled.classes_ = np.empty(2, dtype=object)
    tupled.classes_[:] = [("a",), ("b",)]
    with pytest.raises(ValueError, match="cannot be saved as JSON"):
        save_network(io.BytesIO(), tupled)


# -- served by AsyncClassifier --------------------------------------------------------------


async def test_async_classifier_fits_and_serves_every_kind_of_call(
    sms: tuple[list[str], list[str]],
) -> None:
    """AsyncClassifier fits the network in a worker and answers concurrent classify
    calls, stream, rank and group with the probabilities of one vectorised predict."""
    texts, labels = sms
    clf: AsyncClassifier[str] = AsyncClassifier(small())
    with anyio.fail_after(60):
        await clf.fit(texts[:1500], labels[:1500])
        held_out = texts[3000:3200]
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
        assert list(groups) == CLASSES
        assert sorted(r.index for r in groups["spam"]) == np.flatnonzero(best == 1).tolist()
        assert await clf.score(held_out, labels[3000:3200]) > 0.95


async def test_async_classifier_learns_online_and_updates_with_partial_fit(
    sms: tuple[list[str], list[str]],
) -> None:
    """learn trains the network from a stream of examples (test, then train),
    publishing copies while it serves; partial_fit then updates the served copy."""
    texts, labels = sms
    clf: AsyncClassifier[str] = AsyncClassifier(small())
    with anyio.fail_after(60):
        async with clf.learn(
            list(zip(texts[:1200], labels[:1200], strict=True)),
            classes=CLASSES,
            batch_size=64,
            publish_every=400,
        ) as reports:
            seen = [report async for report in reports]
        assert seen[-1].seen == 1200
        assert [r.seen for r in seen if r.published][-1] == 1200
        assert clf.version == sum(report.published for report in seen) >= 3
        assert seen[-1].window_accuracy > 0.9
        assert await clf.score(texts[3000:3500], labels[3000:3500]) > 0.93
        served = clf.estimator_
        epochs = len(served.net_.history)
        await clf.partial_fit(texts[1200:1400], labels[1200:1400])
        assert clf.version == 4
        assert len(clf.estimator_.net_.history) == epochs + 1
        assert len(served.net_.history) == epochs  # the old model was copied, not changed
