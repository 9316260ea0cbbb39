"""asyncclf.neural, module by module: the hashed features and the torch module
(``_network``), the scikit-learn classifier (``_estimator``) and the description model
files keep of it (``_description``). Model files and serving: test_neural_serving.py."""

from __future__ import annotations

import copy
import inspect
import json
import random
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks, murmurhash3_32
from threadpoolctl import threadpool_limits

torch: Any = pytest.importorskip(
    "torch", reason="asyncclf.neural needs PyTorch: pip install 'asyncclf[torch]'"
)
pytest.importorskip("skorch", reason="asyncclf.neural needs skorch: pip install 'asyncclf[torch]'")
pytest.importorskip(
    "safetensors", reason="asyncclf.neural needs safetensors: pip install 'asyncclf[torch]'"
)

from asyncclf import InvalidParameterError, load_sms_spam  # noqa: E402
from asyncclf.neural import EmbeddingBagClassifier  # noqa: E402
from asyncclf.neural._network import (  # noqa: E402
    EmbeddingBagNetwork,
    collate,
    hashed_bags,
    state_shapes,
    terms,
)

FIXTURE = Path(__file__).parent / "data" / "mixed_scripts.jsonl"
WORDS = {
    "food": "rice soup noodles bread cheese salad",
    "sport": "goal match team score coach ball",
    "weather": "rain wind storm snow cloud thunder",
}
CLASSES = sorted(WORDS)


def toy(rounds: int = 20, seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts of four words drawn from their class's own six, ``rounds`` per class."""
    draw = random.Random(seed)
    texts, labels = [], []
    for _ in range(rounds):
        for label, words in WORDS.items():
            texts.append(" ".join(draw.choices(words.split(), k=4)))
            labels.append(label)
    return texts, labels


def small(**params: Any) -> EmbeddingBagClassifier:
    """A network that learns the toy texts in two epochs, in a fraction of a second."""
    settings: dict[str, Any] = {
        "n_buckets": 2**10,
        "embedding_dim": 8,
        "lr": 0.5,
        "batch_size": 8,
        "max_epochs": 2,
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
def fitted() -> EmbeddingBagClassifier:
    """A small network trained on the toy texts (shared: tests must not change it)."""
    with threadpool_limits(1, user_api="openmp"):
        return small().fit(*toy())


# -- _network: features and the torch module --------------------------------------------


def test_terms_are_the_tokens_then_their_word_ngrams() -> None:
    """A text's terms are its default-pipeline tokens, lowercased or not, then each run
    of 2 to word_ngrams tokens joined by a space."""
    assert terms("Rain WIND storm", lowercase=True, word_ngrams=1) == ["rain", "wind", "storm"]
    assert terms("Rain wind storm", lowercase=False, word_ngrams=3) == [
        "Rain",
        "wind",
        "storm",
        "Rain wind",
        "wind storm",
        "Rain wind storm",
    ]


def test_bags_hold_each_terms_murmurhash_bucket_once_per_occurrence() -> None:
    """A text's bag is the MurmurHash3 (seed 0) bucket of each term, repeated as often
    as the term occurs, whatever process computes it; an empty text has an empty bag."""
    bags = hashed_bags(["rain rain wind", ""], n_buckets=1000, lowercase=True, word_ngrams=2)
    bucket = {t: abs(murmurhash3_32(t, seed=0)) % 1000 for t in ("rain", "wind", "rain rain")}
    expected = [bucket["rain"], bucket["rain"], bucket["wind"], bucket["rain rain"]]
    expected.append(abs(murmurhash3_32("rain wind", seed=0)) % 1000)
    assert sorted(bags[0].tolist()) == sorted(expected)
    assert bags[1].tolist() == []


def test_the_network_averages_each_texts_own_rows_and_ignores_padding() -> None:
    """A padded mini-batch gives each text the logits of the mean of its own rows;
    the seed, not torch's global generator, decides the weights."""
    network = EmbeddingBagNetwork(10, 4, (3,), n_classes=2, seed=7)
    torch.rand(5)
    twin = EmbeddingBagNetwork(10, 4, (3,), n_classes=2, seed=7)
    assert all(map(torch.equal, network.state_dict().values(), twin.state_dict().values()))
    network.eval()
    ids, targets = collate([(np.array([1, 2, 2]), 0), (np.array([3]), 1)])
    assert ids.tolist() == [[1, 2, 2], [3, -1, -1]]
    assert targets.tolist() == [0, 1]
    rows = network.embedding.weight.detach()
    means = torch.stack([rows[[1, 2, 2]].mean(dim=0), rows[[3]].mean(dim=0)])
    with torch.no_grad():
        torch.testing.assert_close(network(ids), network.dense(means))


def test_state_shapes_are_those_of_the_networks_weights() -> None:
    """The shapes declared without building a network are those of its state dict."""
    network = EmbeddingBagNetwork(50, 6, (5, 4), n_classes=3)
    built = {name: tuple(value.shape) for name, value in network.state_dict().items()}
    assert state_shapes(50, 6, (5, 4), 3) == built


# -- _estimator: scikit-learn's API -----------------------------------------------------


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
        ("word_ngrams", 9),
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


def test_the_public_name_is_the_packages() -> None:
    """The class is asyncclf.neural.EmbeddingBagClassifier, the name model files
    record and the loader trusts, and the package exports exactly it."""
    import asyncclf.neural

    assert asyncclf.neural.__all__ == ["EmbeddingBagClassifier"]
    public = {name for name in vars(asyncclf.neural) if not name.startswith("_")}
    assert public == {"EmbeddingBagClassifier"}
    assert EmbeddingBagClassifier.__module__ == "asyncclf.neural"


def test_importing_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where PyTorch is missing, importing asyncclf.neural raises ImportError naming
    the extra to install."""
    for name in [name for name in sys.modules if name.startswith("asyncclf.neural")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"pip install 'asyncclf\[torch\]'"):
        import asyncclf.neural  # noqa: F401


def test_importing_asyncclf_does_not_import_torch() -> None:
    """torch is an optional extra: importing asyncclf leaves it, skorch, safetensors
    and asyncclf.neural unimported."""
    names = ["torch", "skorch", "safetensors", "asyncclf.neural"]
    code = f"import sys, asyncclf; print([name in sys.modules for name in {names!r}])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str([False] * len(names))


def test_fit_predicts_and_predict_is_the_argmax_of_predict_proba(
    fitted: EmbeddingBagClassifier,
) -> None:
    """Trained on toy texts it classifies others; predict_proba's float64 rows sum to
    one, in classes_ order, and predict is their argmax; no text, no rows."""
    texts, labels = toy(rounds=10, seed=1)
    proba = fitted.predict_proba(texts)
    assert proba.shape == (30, 3)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert list(fitted.classes_) == CLASSES
    predicted = fitted.predict(texts)
    assert list(predicted) == list(fitted.classes_[proba.argmax(axis=1)])
    assert list(predicted) == labels
    assert fitted.predict_proba([]).shape == (0, 3)


def test_early_stopping_ends_training_when_validation_stops_improving() -> None:
    """With a validation split, training stops once the validation loss has not
    improved for `patience` epochs (here labels are noise), well before max_epochs."""
    texts, _ = toy(rounds=30)
    noise = random.Random(0).choices(CLASSES, k=len(texts))
    estimator = small(lr=1.0, max_epochs=30, patience=2, validation_fraction=0.3)
    estimator.fit(texts, noise)
    losses = estimator.net_.history[:, "valid_loss"]
    assert len(losses) < 30
    assert min(losses[-2:]) >= min(losses[:-2])  # the last two epochs did no better


def test_labels_of_any_kind_come_back_as_given() -> None:
    """classes_ holds the original labels, sorted when they sort (ints here), and
    predict returns them, not the network's internal indices."""
    texts = ["rain wind storm", "sun heat dry", "rice soup noodles"] * 10
    labels = [30, 10, 20] * 10
    estimator = small(validation_fraction=None, patience=None, max_epochs=15, batch_size=128)
    estimator.fit(texts, labels)
    assert estimator.classes_.tolist() == [10, 20, 30]
    assert estimator.predict(["storm and rain", "soup"]).tolist() == [30, 20]
    mixed = clone(estimator).fit(texts, ["wet", 1, ("dish",)] * 10)
    assert mixed.classes_.tolist() == ["wet", 1, ("dish",)]  # unsortable: as first seen
    assert mixed.predict(["noodles"]).tolist() == [("dish",)]


def test_random_state_makes_fits_reproducible() -> None:
    """Two fits with the same random_state give identical probabilities (dropout
    included); another random_state gives others."""
    train, test = toy(), toy(rounds=5, seed=1)[0]
    one = small(dropout=0.2, hidden_layer_sizes=(8,)).fit(*train).predict_proba(test)
    two = small(dropout=0.2, hidden_layer_sizes=(8,)).fit(*train).predict_proba(test)
    other = small(dropout=0.2, hidden_layer_sizes=(8,), random_state=1).fit(*train)
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other.predict_proba(test))


def test_fit_leaves_torch_global_state_alone() -> None:
    """Training changes neither torch's thread count nor its global random state."""
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    small(dropout=0.1).fit(*toy())
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_chinese_and_other_unspaced_scripts_are_learned() -> None:
    """Texts without spaces are cut into character n-grams (the default pipeline's
    tokeniser), so a network learns Chinese, Japanese and Thai from a few sentences."""
    rows = [json.loads(line) for line in FIXTURE.read_text("utf-8").splitlines()]
    estimator = small(validation_fraction=None, patience=None, max_epochs=40, batch_size=128)
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


def test_partial_fit_needs_classes_first_then_learns_one_pass_a_call() -> None:
    """The first partial_fit needs classes; each call is one epoch (no validation
    split), continuing from the weights before; labels outside the classes, or other
    classes, are refused."""
    texts, labels = toy()
    estimator = small()
    with pytest.raises(ValueError, match=r"needs classes=\[\.\.\.\]"):
        estimator.partial_fit(texts[:10], labels[:10])
    for start in range(0, 60, 20):
        estimator.partial_fit(texts[start : start + 20], labels[start : start + 20], CLASSES)
    history = estimator.net_.history
    assert len(history) == 3
    assert not any("valid_loss" in epoch for epoch in history)
    assert list(estimator.classes_) == CLASSES
    held_out, truth = toy(rounds=5, seed=1)
    assert estimator.predict(held_out).tolist() == truth
    with pytest.raises(ValueError, match="'eggs', which is not one of the classes"):
        estimator.partial_fit(["text"], ["eggs"])
    with pytest.raises(ValueError, match="differs from the classes already learned"):
        estimator.partial_fit(["text"], ["food"], classes=["food", "eggs"])


def test_partial_fit_after_fit_continues_a_deep_copy_without_validation(
    fitted: EmbeddingBagClassifier,
) -> None:
    """partial_fit on a copy of a network trained by fit adds one plain epoch and
    changes the copy's weights; the original is untouched."""
    texts, labels = toy(rounds=5, seed=2)
    estimator = copy.deepcopy(fitted)
    # The copy's optimiser steps the copy's own parameters.
    stepped = {id(p) for group in estimator.net_.optimizer_.param_groups for p in group["params"]}
    assert stepped == {id(p) for p in estimator.net_.module_.parameters()}
    before = fitted.predict_proba(texts)
    estimator.partial_fit(texts, labels)
    assert len(estimator.net_.history) == len(fitted.net_.history) + 1
    assert "valid_loss" not in estimator.net_.history[-1]
    assert not np.array_equal(estimator.predict_proba(texts), before)
    np.testing.assert_array_equal(fitted.predict_proba(texts), before)


@pytest.mark.slow
def test_a_network_learns_sms_spam() -> None:
    """On the bundled SMS collection, fit (with early stopping) and five partial_fit
    passes each classify 1,000 held-out messages above 95% accuracy."""
    texts, labels = load_sms_spam()
    held_out, truth = texts[3000:4000], np.array(labels[3000:4000])
    settings = {"n_buckets": 2**14, "embedding_dim": 16, "lr": 0.2, "batch_size": 128}
    fit = small(max_epochs=3, **settings).fit(texts[:1500], labels[:1500])
    assert np.mean(fit.predict(held_out) == truth) > 0.95
    online = small(**settings)
    for start in range(0, 1500, 300):
        online.partial_fit(texts[start : start + 300], labels[start : start + 300], ["ham", "spam"])
    assert np.mean(online.predict(held_out) == truth) > 0.95


# -- _description: what a model file keeps of it ---------------------------------------


def restored(description: dict[str, Any], arrays: dict[str, Any]) -> EmbeddingBagClassifier:
    return EmbeddingBagClassifier._asyncclf_restore_(description, arrays)


def test_a_restored_network_has_the_same_probabilities_classes_and_parameters(
    fitted: EmbeddingBagClassifier,
) -> None:
    """The description and weights build back a classifier predicting identical
    probabilities, with the same classes and hyperparameters, that partial_fit trains."""
    description, arrays = fitted._asyncclf_state_()
    json.dumps(description)  # JSON holds it
    loaded = restored(description, arrays)
    texts, labels = toy(rounds=5, seed=1)
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    assert loaded.classes_.tolist() == fitted.classes_.tolist()
    assert loaded.get_params() == fitted.get_params()
    assert len(loaded.partial_fit(texts, labels).net_.history) == 1  # a fresh optimiser


def test_unfitted_and_unsavable_networks_are_refused(fitted: EmbeddingBagClassifier) -> None:
    """A description needs a fitted network whose classes JSON keeps as they are."""
    with pytest.raises(NotFittedError):
        small()._asyncclf_state_()
    tupled = copy.deepcopy(fitted)
    tupled.classes_ = np.empty(3, dtype=object)
    tupled.classes_[:] = [("a",), ("b",), ("c",)]
    with pytest.raises(ValueError, match="cannot be saved as JSON"):
        tupled._asyncclf_state_()


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d, a: d.update(format_version=2), "Not a network description"),
        (lambda d, a: d.update({"class": "os.system"}), "not a asyncclf.neural"),
        (lambda d, a: d["network"].update(embedding_dim=9), "does not match its parameters"),
        (lambda d, a: a.update({"embedding.weight": a["embedding.weight"][:-1]}), "weights"),
        (lambda d, a: a["dense.1.bias"].__setitem__(0, np.nan), "NaN"),
        (lambda d, a: d.update(classes=["food", "food", "sport"]), "not unique"),
        (lambda d, a: d["params"].update(colour="red"), "do not fit"),
    ],
    ids=["format", "class", "shape", "weights", "nan", "classes", "params"],
)
def test_a_description_that_does_not_match_is_refused(
    fitted: EmbeddingBagClassifier, damage: Any, match: str
) -> None:
    """Another format or class, a shape other than the parameters', weights of
    another shape or not finite, repeated classes or unknown parameters: ValueError."""
    description, arrays = fitted._asyncclf_state_()
    damage(description, arrays)
    with pytest.raises(ValueError, match=match):
        restored(description, arrays)


def test_a_network_saved_on_a_gpu_restores_on_the_cpu_with_a_warning(
    fitted: EmbeddingBagClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where CUDA is not available, a network described with device="cuda" loads on the
    CPU, with a warning saying so, and predicts as before."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    description, arrays = fitted._asyncclf_state_()
    description["params"]["device"] = "cuda:0"
    with pytest.warns(UserWarning, match="loads on the CPU"):
        loaded = restored(description, arrays)
    assert loaded.device == "cpu"
    texts = toy(rounds=2, seed=1)[0]
    np.testing.assert_array_equal(loaded.predict_proba(texts), fitted.predict_proba(texts))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restored(*fitted._asyncclf_state_())  # a CPU network: no warning


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
def test_training_and_predicting_on_a_gpu() -> None:
    """On a GPU the network trains and predicts there, and restores there too."""
    estimator = small(device="cuda").fit(*toy())
    assert next(estimator.net_.module_.parameters()).is_cuda
    texts, labels = toy(rounds=5, seed=1)
    assert estimator.predict(texts).tolist() == labels
    loaded = restored(*estimator._asyncclf_state_())
    assert next(loaded.net_.module_.parameters()).is_cuda
    np.testing.assert_allclose(
        loaded.predict_proba(texts), estimator.predict_proba(texts), atol=1e-6
    )
