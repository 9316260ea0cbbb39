"""A neural text classifier in the fastText style, trained with skorch (optional).

:class:`EmbeddingBagClassifier` is a scikit-learn classifier taking a list of ``str``,
so it plugs into ``AsyncClassifier(EmbeddingBagClassifier())`` like any other. Each
text becomes the tokens of the default pipeline (:func:`asyncclf._text.tokenize`, so
scripts without spaces between words work too) and its word bigrams, hashed with
MurmurHash3 into ``n_buckets`` rows of an embedding table. The mean of a text's rows
(``torch.nn.EmbeddingBag(mode="mean")``) feeds dense layers ending in one logit per
class; softmax makes them probabilities. skorch does the training: epochs, mini-batches,
the validation split, early stopping.

Saving needs no pickle: :func:`save_network` writes the network's weights with
safetensors and everything else as JSON in the file's header, and :func:`load_network`
builds the classifier back from those alone.

Needs the ``torch`` extra (PyTorch, skorch, safetensors): ``pip install 'asyncclf[torch]'``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import struct
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import IO, Any

try:
    import safetensors.numpy
    import skorch
    import torch
    from skorch.callbacks import EarlyStopping
    from skorch.dataset import ValidSplit
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = (
        f"asyncclf.neural needs PyTorch, skorch and safetensors, and one is missing "
        f"({exc}). Install them with: pip install 'asyncclf[torch]'"
    )
    raise ImportError(msg) from exc

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from typing_extensions import Self

from ._errors import InvalidParameterError, PersistenceError
from ._text import tokenize

__all__ = ["EmbeddingBagClassifier", "load_network", "save_network"]

FORMAT = "asyncclf-network"
FORMAT_VERSION = 1

_PREDICT_BATCH = 256
"""Texts per forward pass when predicting (and validating), padded to the longest: 256
texts of 60,000 terms (the longest 20 Newsgroups posts) take 61 MB."""


# -- features: tokens and word n-grams, hashed -----------------------------------------


def _terms(text: str, *, lowercase: bool, word_ngrams: int) -> list[str]:
    """The tokens of ``text`` and its word n-grams up to ``word_ngrams`` words.

    An n-gram joins its tokens with a space, which no token holds, so it never
    hashes as a token does.
    """
    tokens = tokenize(text.lower() if lowercase else text)
    terms = list(tokens)
    for n in range(2, word_ngrams + 1):
        terms += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return terms


def _hashed(texts: Any, *, n_buckets: int, lowercase: bool, word_ngrams: int) -> Any:
    """One row of hashed term counts per text (a CSR matrix, columns < ``n_buckets``).

    scikit-learn's ``HashingVectorizer``: MurmurHash3 with seed 0, the same in every
    process (Python's own ``hash`` of a string changes with each process).
    """
    vectorizer = HashingVectorizer(
        analyzer=partial(_terms, lowercase=lowercase, word_ngrams=word_ngrams),
        n_features=n_buckets,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )
    return vectorizer.transform(texts)


def _bags(counts: Any) -> NDArray[np.object_]:
    """Each text's bucket ids, each repeated as often as its term occurs (so that the
    mean over the bag is the mean over the text's terms), as an object array of int32
    arrays, which skorch indexes and splits like any array."""
    repeats = counts.data.astype(np.int64)
    ids = np.repeat(counts.indices.astype(np.int32), repeats)
    bounds = np.concatenate([[0], np.cumsum(repeats)])[counts.indptr]
    bags = np.empty(counts.shape[0], dtype=object)
    for row, bag in enumerate(np.split(ids, bounds[1:-1])):
        bags[row] = bag
    return bags


_MAX_NGRAMS = 8
"""The longest word n-grams: a text of L words costs about L * n**2 to cut, so a file
(or a caller) cannot make classifying one text take minutes."""

_PAD = -1
"""Fills a mini-batch's rows past the end of a shorter text's bag."""


def _collate(batch: Sequence[tuple[Any, Any]]) -> tuple[torch.Tensor, Any]:
    """A mini-batch's bags as one tensor, a row per text padded with ``_PAD``.

    One tensor of one row per text, because skorch counts a batch's texts by the
    length of what the iterator yields (a flat array of ids and its offsets would
    count as a batch of inconsistent lengths).
    """
    bags = [bag for bag, _ in batch]
    width = max(1, max((len(bag) for bag in bags), default=0))
    ids = np.full((len(bags), width), _PAD, dtype=np.int32)
    for row, bag in enumerate(bags):
        ids[row, : len(bag)] = bag
    targets = torch.utils.data.default_collate([target for _, target in batch])
    return torch.from_numpy(ids), targets


# -- the network -------------------------------------------------------------------


class EmbeddingBagNetwork(torch.nn.Module):
    """Mean of the texts' embedding rows, then dense layers, one logit per class.

    Args:
        n_buckets: Rows of the embedding table.
        embedding_dim: Width of each row.
        hidden_layer_sizes: Widths of the hidden dense layers (ReLU), none for a
            linear layer straight from the mean embedding to the logits.
        n_classes: Logits out.
        dropout: Probability of zeroing an input of each dense layer in training.
        seed: Seeds the initial weights (a generator of its own: the global one is
            not touched); None draws them from torch's global generator.
        sparse: Give the embedding sparse gradients (for optimisers that take them).
    """

    def __init__(
        self,
        n_buckets: int,
        embedding_dim: int,
        hidden_layer_sizes: Sequence[int],
        n_classes: int,
        dropout: float = 0.0,
        seed: int | None = None,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.embedding = torch.nn.EmbeddingBag(n_buckets, embedding_dim, mode="mean", sparse=sparse)
        layers: list[torch.nn.Module] = []
        width = embedding_dim
        for size in hidden_layer_sizes:
            layers += [torch.nn.Dropout(dropout), torch.nn.Linear(width, size), torch.nn.ReLU()]
            width = size
        layers += [torch.nn.Dropout(dropout), torch.nn.Linear(width, n_classes)]
        self.dense = torch.nn.Sequential(*layers)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        # fastText's initialisation: small uniform rows, so that the mean of a few
        # hundred of them starts near zero.
        bound = 1.0 / embedding_dim
        torch.nn.init.uniform_(self.embedding.weight, -bound, bound, generator=generator)
        for layer in self.dense:
            if isinstance(layer, torch.nn.Linear):
                fan_in = layer.weight.shape[1]
                bound = 1.0 / math.sqrt(fan_in)
                torch.nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
                torch.nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits for the bags given one per row of ``ids``, padded with ``_PAD``."""
        present = ids != _PAD
        lengths = present.sum(dim=1)
        offsets = torch.zeros_like(lengths)
        torch.cumsum(lengths[:-1], dim=0, out=offsets[1:])
        # The mean over each text's own ids: padding never reaches the embedding.
        means = self.embedding(ids[present], offsets.to(ids.dtype))
        logits: torch.Tensor = self.dense(means)
        return logits


# -- the estimator ---------------------------------------------------------------------

_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adagrad": "Adagrad"}
_SPARSE = {"sgd", "adagrad"}
"""Optimisers that take sparse gradients: with them the embedding's gradient holds only
the rows a mini-batch used, and a step touches those rows alone."""


class EmbeddingBagClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A fastText-style neural text classifier: hashed words and word bigrams, a mean
    embedding, dense layers, softmax; trained with skorch.

    Each text is cut into the default pipeline's tokens (lowercased), to which its
    word n-grams up to ``word_ngrams`` words are added; each term is hashed
    (MurmurHash3, stable across processes) to one of ``n_buckets`` rows of an
    embedding table. The mean of a text's rows feeds ``hidden_layer_sizes`` dense ReLU
    layers and a last linear layer giving one logit per class.

    ``fit`` trains a new network: ``max_epochs`` passes over the data in shuffled
    mini-batches of ``batch_size``, with ``optimizer`` at learning rate ``lr``. A
    ``validation_fraction`` of the data is held out (stratified, unless a class is
    too rare for that), and training stops when its loss has not improved for
    ``patience`` epochs, keeping the weights of the best epoch (skorch's
    ``ValidSplit`` and ``EarlyStopping``). ``partial_fit`` makes one pass over the
    texts it is given, with no validation split, continuing from the current weights
    and optimiser state (the first call needs ``classes``).

    ``"adagrad"`` and ``"sgd"`` give the embedding sparse gradients, so a step updates
    only the rows its mini-batch used; ``"adam"`` and ``"adamw"`` update the whole table
    every step, which is about a hundred times slower with a large table. The table
    takes ``n_buckets * embedding_dim * 4`` bytes, and the optimiser's state as much
    again (2**20 rows of 100: 800 MB in all).

    Runs on ``device``, ``"cpu"`` or ``"cuda"`` (an error if CUDA is not available).
    Never changes torch's settings: the thread count is the caller's (asyncclf caps
    it per worker call), and ``random_state`` seeds the initial weights and the
    shuffling with generators of their own. Dropout draws from torch's global
    generator, which ``fit`` and ``partial_fit`` seed inside
    :func:`torch.random.fork_rng`, restoring its state after: training with
    ``dropout`` is reproducible when no other thread draws from it meanwhile.

    Args:
        n_buckets: Rows of the embedding table that terms are hashed into.
        word_ngrams: Longest word n-gram added to the tokens (1: tokens only).
        embedding_dim: Width of an embedding row.
        hidden_layer_sizes: Widths of the hidden dense layers; ``()`` for none.
        dropout: Dropout before each dense layer, in training.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"adagrad"`` (``torch.optim``).
        lr: Learning rate.
        batch_size: Texts per training step.
        max_epochs: Most passes over the data in ``fit``.
        validation_fraction: Share of ``fit``'s data held out to stop early; None to
            train on all of it for ``max_epochs`` (then ``patience`` watches the
            training loss).
        patience: Epochs without improvement before ``fit`` stops; None never stops
            early.
        lowercase: Lowercase texts before cutting them into tokens.
        device: Where the network trains and predicts: ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        random_state: Seed for the weights, the split and the shuffling (an int for
            reproducible fits).
    """

    def __init__(
        self,
        *,
        n_buckets: int = 2**20,
        word_ngrams: int = 2,
        embedding_dim: int = 100,
        hidden_layer_sizes: Sequence[int] = (),
        dropout: float = 0.0,
        optimizer: str = "adagrad",
        lr: float = 0.3,
        batch_size: int = 128,
        max_epochs: int = 10,
        validation_fraction: float | None = 0.1,
        patience: int | None = 2,
        lowercase: bool = True,
        device: str = "cpu",
        random_state: int | None = None,
    ) -> None:
        self.n_buckets = n_buckets
        self.word_ngrams = word_ngrams
        self.embedding_dim = embedding_dim
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lowercase = lowercase
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = self.random_state is None
        return tags

    # -- checks ----------------------------------------------------------------------

    def _check_params(self) -> None:
        """Refuse a bad hyperparameter, naming it (InvalidParameterError, a ValueError)."""

        def whole(name: str, value: Any, low: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                msg = f"{name} must be an int >= {low}; got {value!r}."
                raise InvalidParameterError(msg)

        whole("n_buckets", self.n_buckets, 1)
        whole("word_ngrams", self.word_ngrams, 1)
        if self.word_ngrams > _MAX_NGRAMS:  # a text of L words costs about L * n**2
            msg = f"word_ngrams must be at most {_MAX_NGRAMS}; got {self.word_ngrams!r}."
            raise InvalidParameterError(msg)
        whole("embedding_dim", self.embedding_dim, 1)
        whole("batch_size", self.batch_size, 1)
        whole("max_epochs", self.max_epochs, 1)
        if self.patience is not None:
            whole("patience", self.patience, 1)
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, str) or not isinstance(sizes, Iterable):
            msg = f"hidden_layer_sizes must be a sequence of ints; got {sizes!r}."
            raise InvalidParameterError(msg)
        for size in sizes:
            whole("each of hidden_layer_sizes", size, 1)

        def number(value: Any) -> bool:
            return isinstance(value, float | int | np.number) and not isinstance(value, bool)

        if not number(self.dropout) or not 0 <= self.dropout < 1:
            msg = f"dropout must be a number in [0, 1); got {self.dropout!r}."
            raise InvalidParameterError(msg)
        if not number(self.lr) or not self.lr > 0:
            msg = f"lr must be a positive number; got {self.lr!r}."
            raise InvalidParameterError(msg)
        if self.optimizer not in _OPTIMIZERS:
            msg = f"optimizer must be one of {sorted(_OPTIMIZERS)}; got {self.optimizer!r}."
            raise InvalidParameterError(msg)
        fraction = self.validation_fraction
        if fraction is not None and (not number(fraction) or not 0 < fraction < 1):
            msg = f"validation_fraction must be None or in (0, 1); got {fraction!r}."
            raise InvalidParameterError(msg)
        self._torch_device()

    def _torch_device(self) -> torch.device:
        """The device to run on, or InvalidParameterError if it is not there."""
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            msg = f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}."
            raise InvalidParameterError(msg) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            msg = (
                f"device={self.device!r} but CUDA is not available to PyTorch here "
                f"(torch {torch.__version__}, a CPU-only build or no GPU); use device='cpu'."
            )
            raise InvalidParameterError(msg)
        if device.type not in ("cpu", "cuda"):
            msg = f"device must be 'cpu', 'cuda' or 'cuda:N'; got {self.device!r}."
            raise InvalidParameterError(msg)
        return device

    # -- the skorch net --------------------------------------------------------------

    def _new_net(self, n_classes: int, seed: int, *, validate: bool) -> Any:
        """A skorch classifier for ``n_classes``, initialised; ``validate`` adds the
        validation split and early stopping of ``fit``."""
        train_split = None
        callbacks: list[tuple[str, Any]] = []
        if validate and self.validation_fraction is not None:
            train_split = ValidSplit(self.validation_fraction, stratified=True, random_state=seed)
        if validate and self.patience is not None:
            monitor = "train_loss" if train_split is None else "valid_loss"
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(monitor=monitor, patience=self.patience, load_best=True),
                )
            )
        net = skorch.NeuralNetClassifier(
            EmbeddingBagNetwork,
            module__n_buckets=self.n_buckets,
            module__embedding_dim=self.embedding_dim,
            module__hidden_layer_sizes=tuple(self.hidden_layer_sizes),
            module__n_classes=n_classes,
            module__dropout=float(self.dropout),
            module__seed=seed,
            module__sparse=self.optimizer in _SPARSE,
            criterion=torch.nn.CrossEntropyLoss,
            optimizer=getattr(torch.optim, _OPTIMIZERS[self.optimizer]),
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=train_split,
            callbacks=callbacks,
            classes=list(range(n_classes)),
            iterator_train__shuffle=True,
            iterator_train__collate_fn=_collate,
            iterator_train__generator=torch.Generator().manual_seed(seed),
            iterator_valid__collate_fn=_collate,
            iterator_valid__batch_size=max(self.batch_size, _PREDICT_BATCH),
            # A DataLoader draws a seed for its workers from this generator on every
            # pass, by default torch's global one: predicting would then draw from it,
            # and shift the stream of a seeded fit running in another thread.
            iterator_valid__generator=torch.Generator(),
            device=str(self._torch_device()),
            verbose=0,
        )
        return net.initialize()

    def _seed(self) -> int:
        seed: int = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        return seed

    def _bags_of(self, X: Any) -> NDArray[np.object_]:
        if isinstance(X, str | bytes):
            msg = "X must be an iterable of texts; got a single string."
            raise ValueError(msg)
        texts = list(X)
        if not texts:
            return np.empty(0, dtype=object)
        counts = _hashed(
            texts,
            n_buckets=self.n_buckets,
            lowercase=self.lowercase,
            word_ngrams=self.word_ngrams,
        )
        return _bags(counts)

    @staticmethod
    def _targets(y: Any, n_texts: int, classes: NDArray[Any]) -> NDArray[np.int64]:
        """Each label's position in ``classes``: the network's class index."""
        labels = _label_list(y)
        if len(labels) != n_texts:
            msg = f"X holds {n_texts} texts but y holds {len(labels)} labels."
            raise ValueError(msg)
        index = {label: i for i, label in enumerate(classes.tolist())}
        try:
            return np.fromiter((index[label] for label in labels), np.int64, len(labels))
        except KeyError as exc:
            msg = (
                f"y holds the label {exc.args[0]!r}, which is not one of the classes "
                f"{classes.tolist()!r} (partial_fit learns the classes of its first call)."
            )
            raise ValueError(msg) from None

    @contextmanager
    def _own_torch_state(self, seed: int) -> Iterator[None]:
        """Seed torch's global generator for what happens inside (the layers' default
        initialisation, dropout), and give back its state afterwards, so that training
        leaves torch's global state as it found it."""
        device = self._torch_device()
        devices = [device.index or 0] if device.type == "cuda" else []
        # Sparse gradients make torch warn, once, that sparse invariant checks are
        # "implicitly" off: they are set explicitly to what they already are.
        checks = torch.sparse.check_sparse_tensor_invariants
        with (
            _GLOBAL_GENERATOR,  # one fit at a time per process may fork and restore it
            torch.random.fork_rng(devices=devices, device_type=device.type),
            checks(enable=checks.is_enabled()),  # type: ignore[no-untyped-call]
        ):
            torch.manual_seed(seed)
            yield

    # -- scikit-learn's API ----------------------------------------------------------

    def fit(self, X: Iterable[str], y: Iterable[Hashable]) -> Self:
        """Train a new network on the texts ``X`` and their labels ``y``; return self."""
        self._check_params()
        bags = self._bags_of(X)
        labels = _label_list(y)
        classes = _classes_of(labels)
        if len(classes) < 2:
            msg = f"y holds a single class, {classes.tolist()!r}; a classifier needs two."
            raise ValueError(msg)
        targets = self._targets(labels, len(bags), classes)
        seed = self._seed()
        with self._own_torch_state(seed):
            net = self._new_net(len(classes), seed, validate=True)
            if net.train_split is not None and not _can_stratify(targets, self.validation_fraction):
                split = ValidSplit(self.validation_fraction, stratified=False, random_state=seed)
                net.set_params(train_split=split)
            net.partial_fit(bags, targets)
        _for_partial_fit(net)
        self.classes_, self.net_ = classes, net
        return self

    def partial_fit(
        self, X: Iterable[str], y: Iterable[Hashable], classes: Iterable[Hashable] | None = None
    ) -> Self:
        """Train one pass over ``X`` and ``y``, continuing from the current network.

        The first call (on an unfitted classifier) needs ``classes``, every label it
        will ever see, as scikit-learn's ``partial_fit`` does. There is no validation
        split and no early stopping: each call is one epoch over what it is given.
        """
        first = not hasattr(self, "net_")
        if first:
            self._check_params()
            if classes is None:
                msg = "The first partial_fit needs classes=[...], every class it will ever see."
                raise ValueError(msg)
            known = _classes_of(_label_list(classes))
        else:
            known = self.classes_
            if classes is not None and _classes_of(_label_list(classes)).tolist() != (
                known.tolist()
            ):
                msg = (
                    f"classes={list(classes)!r} differs from the classes already learned, "
                    f"{known.tolist()!r}."
                )
                raise ValueError(msg)
        bags = self._bags_of(X)
        targets = self._targets(y, len(bags), known)
        seed = self._seed()
        with self._own_torch_state(seed):
            net = self._new_net(len(known), seed, validate=False) if first else self.net_
            net.partial_fit(bags, targets, epochs=1)
        self.classes_, self.net_ = known, net
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> EmbeddingBagClassifier:
        """A deep copy whose tensors are copied in memory.

        skorch copies a network by pickling it into a temporary file: 17 s for a table
        of 2**20 rows of 100 and its optimiser state. asyncclf copies the model for
        every ``partial_fit`` and each model ``learn`` publishes.
        """
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        for name, value in vars(self).items():
            copy_of = _copy_net if name == "net_" else copy.deepcopy
            copied.__dict__[name] = copy_of(value, memo)
        return copied

    def predict_proba(self, X: Iterable[str]) -> NDArray[np.float64]:
        """Return one row per text: the probability of each class, in ``classes_`` order."""
        check_is_fitted(self)
        bags = self._bags_of(X)
        if not len(bags):
            return np.zeros((0, len(self.classes_)))
        proba = self.net_.predict_proba(bags)
        return np.asarray(proba, dtype=np.float64)

    def predict(self, X: Iterable[str]) -> NDArray[Any]:
        """Return the most probable class of each text."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]  # type: ignore[no-any-return]

    # -- persistence without pickle --------------------------------------------------

    def _asyncclf_state_(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """Describe this fitted classifier as JSON-able values, and its weights as arrays.

        The description holds the class, the hyperparameters, the classes and the
        network's shape; :meth:`_asyncclf_restore_` builds the classifier back from
        it and the arrays. The optimiser's state is not kept: ``partial_fit`` after a
        restore starts it afresh.

        Raises:
            ValueError: a class label or hyperparameter JSON cannot hold as it is.
        """
        check_is_fitted(self)
        params = {
            name: value.item() if isinstance(value, np.generic) else value
            for name, value in self.get_params(deep=False).items()
        }
        params["hidden_layer_sizes"] = [int(size) for size in params["hidden_layer_sizes"]]
        if params["random_state"] is not None and not isinstance(params["random_state"], int):
            params["random_state"] = None  # a RandomState: its use is done once fitted
        classes = self.classes_.tolist()
        for what, value in (("classes", classes), ("parameters", params)):
            if _from_json(json.dumps(value)) != value or not _same_types(
                _from_json(json.dumps(value)), value
            ):
                msg = f"The {what} {value!r} cannot be saved as JSON without changing them."
                raise ValueError(msg)
        description = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": params,
            "classes": classes,
            "classes_repr": [repr(label) for label in classes],
            "network": {
                "n_buckets": int(self.n_buckets),
                "embedding_dim": int(self.embedding_dim),
                "hidden_layer_sizes": params["hidden_layer_sizes"],
                "n_classes": len(classes),
                "dropout": float(self.dropout),
            },
            "versions": {"torch": torch.__version__, "skorch": skorch.__version__},
        }
        arrays = {
            name: tensor.detach().cpu().numpy().copy()
            for name, tensor in self.net_.module_.state_dict().items()
        }
        return description, arrays

    @classmethod
    def _asyncclf_restore_(
        cls, description: dict[str, Any], arrays: dict[str, NDArray[Any]]
    ) -> EmbeddingBagClassifier:
        """Build a fitted classifier from what :meth:`_asyncclf_state_` returned.

        Raises:
            ValueError: the description or the arrays do not describe this network.
        """
        if description.get("format") != FORMAT or description.get("format_version") != (
            FORMAT_VERSION
        ):
            msg = (
                f"Not a network description of format {FORMAT} version {FORMAT_VERSION}: "
                f"{description.get('format')!r} version {description.get('format_version')!r}."
            )
            raise ValueError(msg)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if description.get("class") != name:
            msg = f"The description is of a {description.get('class')!r}, not a {name}."
            raise ValueError(msg)
        params = dict(description["params"])
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        try:
            estimator = cls(**params)
            estimator._check_params()
        except TypeError as exc:
            msg = f"The description's parameters do not fit {name}: {exc}"
            raise ValueError(msg) from exc
        classes = _classes_of(list(description["classes"]))
        if classes.tolist() != list(description["classes"]):
            msg = "The description's classes are not unique and in their fitted order."
            raise ValueError(msg)
        network = description["network"]
        expected = {
            "n_buckets": params["n_buckets"],
            "embedding_dim": params["embedding_dim"],
            "hidden_layer_sizes": list(params["hidden_layer_sizes"]),
            "n_classes": len(classes),
            "dropout": float(params["dropout"]),
        }
        if network != expected:
            msg = f"The network's shape {network!r} does not match its parameters {expected!r}."
            raise ValueError(msg)
        # Checked before anything is built: a small file declaring a huge network must
        # not make it allocated (2**24 x 16 took 2.5 GB, weights and optimiser state).
        shapes = _state_shapes(network)
        found = {key: tuple(value.shape) for key, value in arrays.items()}
        if found != shapes:
            msg = f"The weights {found!r} do not match the network, which has {shapes!r}."
            raise ValueError(msg)
        if not all(np.isfinite(value).all() for value in arrays.values()):
            msg = "The weights hold NaN or infinite values."
            raise ValueError(msg)
        estimator.classes_ = classes
        with estimator._own_torch_state(0):  # the weights drawn here are replaced
            net = estimator._new_net(len(classes), 0, validate=False)
        module = net.module_
        shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
        found = {key: tuple(value.shape) for key, value in arrays.items()}
        if found != shapes:
            msg = f"The weights {found!r} do not match the network, which has {shapes!r}."
            raise ValueError(msg)
        state = {key: torch.from_numpy(np.array(arrays[key], copy=True)) for key in shapes}
        module.load_state_dict(state)
        estimator.net_ = net
        return estimator


_GLOBAL_GENERATOR = threading.Lock()
"""Held while a fit or partial_fit has torch's global generator forked: concurrent
fits in threads would save and restore each other's states (measured: four
concurrent fits with the same random_state and dropout made four different models)."""


def _state_shapes(network: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of the weights of the network a description declares, by the names
    of :class:`EmbeddingBagNetwork`'s state dict, without building it."""
    shapes: dict[str, tuple[int, ...]] = {
        "embedding.weight": (network["n_buckets"], network["embedding_dim"])
    }
    width, position = network["embedding_dim"], 1  # each block: Dropout, Linear, ReLU
    for size in network["hidden_layer_sizes"]:
        shapes[f"dense.{position}.weight"] = (size, width)
        shapes[f"dense.{position}.bias"] = (size,)
        width, position = size, position + 3
    shapes[f"dense.{position}.weight"] = (network["n_classes"], width)
    shapes[f"dense.{position}.bias"] = (network["n_classes"],)
    return shapes


def _for_partial_fit(net: Any) -> None:
    """Turn a network trained by ``fit`` into one ``partial_fit`` trains on: no
    validation split and no early stopping (whose copy of the best weights goes)."""
    net.set_params(train_split=None, callbacks=[])
    net.initialize_callbacks()  # set_params keeps the callbacks it had


def _copy_net(net: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a skorch network, by ``copy.deepcopy`` of its attributes: the
    module first, so that the optimiser's references to its parameters become
    references to the copy's."""
    copied = object.__new__(type(net))
    memo[id(net)] = copied
    copy.deepcopy(net.module_, memo)
    copied.__dict__.update({name: copy.deepcopy(value, memo) for name, value in vars(net).items()})
    return copied


def _label_list(y: Any) -> list[Hashable]:
    """``y`` as a list of Python values (numpy scalars become Python ones)."""
    if isinstance(y, str | bytes):
        msg = "y must be an iterable of labels; got a single string."
        raise ValueError(msg)
    values = y.tolist() if isinstance(y, np.ndarray) else list(y)
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def _classes_of(labels: list[Hashable]) -> NDArray[Any]:
    """The distinct labels, sorted when they can be (as ``numpy.unique`` sorts them),
    else in the order first seen; a one-dimensional array either way, of objects
    unless every label is a str, or every one an int (numpy would turn ``[1, "a"]``
    into strings and ``[("a",)]`` into a 2-d array)."""
    distinct: list[Any] = list(dict.fromkeys(labels))
    with contextlib.suppress(TypeError):  # labels of mixed types: kept as first seen
        distinct.sort()
    kinds = {type(label) for label in distinct}
    if kinds == {str} or kinds == {int}:
        return np.asarray(distinct)
    array = np.empty(len(distinct), dtype=object)
    for position, label in enumerate(distinct):
        array[position] = label
    return array


def _can_stratify(targets: NDArray[np.int64], fraction: float | None) -> bool:
    """Whether a stratified split of ``fraction`` can hold every class on both sides."""
    if fraction is None:
        return False
    counts = np.bincount(targets)
    held = math.ceil(fraction * len(targets))
    classes = int((counts > 0).sum())
    return bool(counts[counts > 0].min() >= 2 and classes <= held <= len(targets) - classes)


def _from_json(text: str) -> Any:
    return json.loads(text)


def _same_types(left: Any, right: Any) -> bool:
    """Whether two JSON-like values have the same types all the way down (``1`` and
    ``1.0`` or ``True`` are equal in Python but not the same label)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same_types, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same_types(left[k], right[k]) for k in left)
    return True


# -- files: safetensors weights, a JSON description in the header ---------------------


def save_network(
    file: str | os.PathLike[str] | IO[bytes], estimator: EmbeddingBagClassifier
) -> None:
    """Write a fitted :class:`EmbeddingBagClassifier` to ``file`` (a path or a binary
    file object), without pickle.

    The file is a safetensors file: the network's weights as raw arrays, and the
    classifier's description (hyperparameters, classes, the network's shape) as JSON
    in the header's metadata.
    """
    description, arrays = estimator._asyncclf_state_()
    metadata = {FORMAT: json.dumps(description)}
    if isinstance(file, str | os.PathLike):
        safetensors.numpy.save_file(arrays, os.fspath(file), metadata=metadata)
    else:
        file.write(safetensors.numpy.save(arrays, metadata=metadata))


def load_network(
    file: str | os.PathLike[str] | IO[bytes], *, device: str | None = None
) -> EmbeddingBagClassifier:
    """Read the classifier :func:`save_network` wrote to ``file`` (a path or a binary
    file object); nothing in the file is unpickled or run.

    Args:
        file: A path, or a binary file object open for reading.
        device: Where the loaded network runs, instead of the device it was saved
            with (``"cpu"`` loads a network trained on a GPU where there is none).

    Raises:
        PersistenceError: the file is not such a network, or is damaged.
        InvalidParameterError: ``device`` is not available here.
    """
    if device is not None:
        EmbeddingBagClassifier(device=device)._torch_device()  # refused before reading
    data = Path(file).read_bytes() if isinstance(file, str | os.PathLike) else file.read()
    try:
        header = _header(data)
        description = json.loads(header["__metadata__"][FORMAT])
        if device is not None:
            description["params"]["device"] = device
        arrays = safetensors.numpy.load(data)
        return EmbeddingBagClassifier._asyncclf_restore_(description, arrays)
    except Exception as exc:  # a hostile file can make the parsing raise anything
        if isinstance(exc, InvalidParameterError):
            raise
        msg = f"The file is not a network saved by asyncclf.neural.save_network: {exc}"
        raise PersistenceError(msg) from exc


def _header(data: bytes) -> dict[str, Any]:
    """The JSON header of the safetensors file ``data`` (its first 8 bytes give its size)."""
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        msg = "the header's declared size exceeds the file."
        raise ValueError(msg)
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    return header
