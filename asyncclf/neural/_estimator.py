"""The scikit-learn face of the network: :class:`EmbeddingBagClassifier`, its
hyperparameters and their checks, ``fit``, ``partial_fit`` and ``predict_proba`` over
lists of ``str``, and the description model files store (see ``_description``).

The features, the torch module and the skorch net that trains it are in ``_network``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from typing_extensions import Self

from .._errors import InvalidParameterError
from ._description import check, describe
from ._network import (
    MAX_NGRAMS,
    OPTIMIZERS,
    copy_net,
    for_partial_fit,
    hashed_bags,
    new_net,
    own_torch_state,
    torch_device,
)


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

    Runs on ``device``, ``"cpu"`` or ``"cuda"`` (an error if CUDA is not available; a
    model file of a network trained on a GPU loads on the CPU there, with a warning).
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

    # The public name, which model files record and the loader trusts by default.
    __module__ = "asyncclf.neural"

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
        if self.word_ngrams > MAX_NGRAMS:  # a text of L words costs about L * n**2
            msg = f"word_ngrams must be at most {MAX_NGRAMS}; got {self.word_ngrams!r}."
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
        if self.optimizer not in OPTIMIZERS:
            msg = f"optimizer must be one of {sorted(OPTIMIZERS)}; got {self.optimizer!r}."
            raise InvalidParameterError(msg)
        fraction = self.validation_fraction
        if fraction is not None and (not number(fraction) or not 0 < fraction < 1):
            msg = f"validation_fraction must be None or in (0, 1); got {fraction!r}."
            raise InvalidParameterError(msg)
        torch_device(self.device)

    # -- the skorch net --------------------------------------------------------------

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
        return hashed_bags(
            texts, n_buckets=self.n_buckets, lowercase=self.lowercase, word_ngrams=self.word_ngrams
        )

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
        stratified = _can_stratify(targets, self.validation_fraction)
        with own_torch_state(self.device, seed):
            net = new_net(
                self.get_params(), len(classes), seed, validate=True, stratified=stratified
            )
            net.partial_fit(bags, targets)
        for_partial_fit(net)
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
        with own_torch_state(self.device, seed):
            if first:
                net = new_net(self.get_params(), len(known), seed, validate=False, stratified=False)
            else:
                net = self.net_
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
            copy_of = copy_net if name == "net_" else copy.deepcopy
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

    # -- model files (asyncclf._persistence), without pickle --------------------------

    def _asyncclf_state_(self) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
        """Describe this fitted classifier as JSON-able values, and its weights as arrays
        (see :mod:`asyncclf.neural._description`)."""
        return describe(self)

    @classmethod
    def _asyncclf_restore_(
        cls, description: dict[str, Any], arrays: dict[str, NDArray[Any]]
    ) -> EmbeddingBagClassifier:
        """Build a fitted classifier from what :meth:`_asyncclf_state_` returned.

        A network saved on a GPU loads on the CPU, with a warning, where CUDA is not
        available (as skorch loads one).

        Raises:
            ValueError: the description or the arrays do not describe this network.
        """
        params = check(description, arrays, f"{cls.__module__}.{cls.__qualname__}")
        if str(params.get("device")).startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(
                f"The network was saved with device={params['device']!r}, but CUDA is not "
                f"available here: it loads on the CPU (device='cpu').",
                UserWarning,
                stacklevel=2,
            )
            params["device"] = "cpu"
        try:
            estimator = cls(**params)
            estimator._check_params()
        except TypeError as exc:
            msg = f"The description's parameters do not fit {cls.__qualname__}: {exc}"
            raise ValueError(msg) from exc
        classes = _classes_of(list(description["classes"]))
        if classes.tolist() != list(description["classes"]):
            msg = "The description's classes are not unique and in their fitted order."
            raise ValueError(msg)
        estimator.classes_ = classes
        with own_torch_state(estimator.device, 0):  # the weights drawn here are replaced
            net = new_net(estimator.get_params(), len(classes), 0, validate=False, stratified=False)
        net.module_.load_state_dict(
            {key: torch.from_numpy(np.array(value, copy=True)) for key, value in arrays.items()}
        )
        estimator.net_ = net
        return estimator


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
