"""Turn texts into bags of hashed term ids and bags into logits, and build the skorch
net that trains it: the network of :class:`~asyncclf.neural.EmbeddingBagClassifier`,
without its scikit-learn face.

Each text becomes the tokens of the default pipeline (:func:`asyncclf._text.tokenize`,
so scripts without spaces between words work too) and its word n-grams, hashed with
MurmurHash3 into ``n_buckets`` rows of an embedding table. :class:`EmbeddingBagNetwork`
takes the mean of a text's rows (``torch.nn.EmbeddingBag(mode="mean")``) and feeds it to
dense layers ending in one logit per class. skorch trains it (:func:`new_net`): epochs,
mini-batches, the validation split, early stopping.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import skorch
import torch
from numpy.typing import NDArray
from sklearn.feature_extraction.text import HashingVectorizer
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit

from .._errors import InvalidParameterError
from .._text import tokenize

MAX_NGRAMS = 8
"""The longest word n-grams: a text of L words costs about L * n**2 to cut, so a file
(or a caller) cannot make classifying one text take minutes."""

PAD = -1
"""Fills a mini-batch's rows past the end of a shorter text's bag."""


# -- features: tokens and word n-grams, hashed -----------------------------------------


def terms(text: str, *, lowercase: bool, word_ngrams: int) -> list[str]:
    """The tokens of ``text`` and its word n-grams up to ``word_ngrams`` words.

    An n-gram joins its tokens with a space, which no token holds, so it never
    hashes as a token does.
    """
    tokens = tokenize(text.lower() if lowercase else text)
    found = list(tokens)
    for n in range(2, word_ngrams + 1):
        found += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return found


def hashed_bags(
    texts: Sequence[str], *, n_buckets: int, lowercase: bool, word_ngrams: int
) -> NDArray[np.object_]:
    """Each text's bucket ids, as an object array of int32 arrays (which skorch indexes
    and splits like any array).

    A term's bucket is its MurmurHash3 (seed 0, scikit-learn's ``HashingVectorizer``,
    the same in every process, where Python's own ``hash`` of a string changes with
    each one) modulo ``n_buckets``. A bucket id is repeated as often as its terms occur,
    so that the mean over the bag is the mean over the text's terms.
    """
    vectorizer = HashingVectorizer(
        analyzer=partial(terms, lowercase=lowercase, word_ngrams=word_ngrams),
        n_features=n_buckets,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )
    counts = vectorizer.transform(texts)
    repeats = counts.data.astype(np.int64)
    ids = np.repeat(counts.indices.astype(np.int32), repeats)
    bounds = np.concatenate([[0], np.cumsum(repeats)])[counts.indptr]
    found = np.empty(counts.shape[0], dtype=object)
    for row, bag in enumerate(np.split(ids, bounds[1:-1])):
        found[row] = bag
    return found


def collate(batch: Sequence[tuple[Any, Any]]) -> tuple[torch.Tensor, Any]:
    """A mini-batch's bags as one tensor, a row per text padded with :data:`PAD`.

    One tensor of one row per text, because skorch counts a batch's texts by the
    length of what the iterator yields (a flat array of ids and its offsets would
    count as a batch of inconsistent lengths).
    """
    rows = [bag for bag, _ in batch]
    width = max(1, max((len(bag) for bag in rows), default=0))
    ids = np.full((len(rows), width), PAD, dtype=np.int32)
    for row, bag in enumerate(rows):
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
        seed: Seeds the initial weights, with a generator of its own, so that torch's
            global one does not decide them (the layers' default initialisation,
            replaced, still draws from it); None draws them from the global one.
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
        """Logits for the bags given one per row of ``ids``, padded with :data:`PAD`."""
        present = ids != PAD
        lengths = present.sum(dim=1)
        offsets = torch.zeros_like(lengths)
        torch.cumsum(lengths[:-1], dim=0, out=offsets[1:])
        # The mean over each text's own ids: padding never reaches the embedding.
        means = self.embedding(ids[present], offsets.to(ids.dtype))
        logits: torch.Tensor = self.dense(means)
        return logits


def state_shapes(
    n_buckets: int, embedding_dim: int, hidden_layer_sizes: Sequence[int], n_classes: int
) -> dict[str, tuple[int, ...]]:
    """The shapes of an :class:`EmbeddingBagNetwork`'s weights, by the names of its
    state dict, without building it (a huge one would be allocated)."""
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (n_buckets, embedding_dim)}
    width, position = embedding_dim, 1  # each block: Dropout, Linear, ReLU
    for size in hidden_layer_sizes:
        shapes[f"dense.{position}.weight"] = (size, width)
        shapes[f"dense.{position}.bias"] = (size,)
        width, position = size, position + 3
    shapes[f"dense.{position}.weight"] = (n_classes, width)
    shapes[f"dense.{position}.bias"] = (n_classes,)
    return shapes


# -- training: the skorch net ----------------------------------------------------------

OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adagrad": "Adagrad"}
SPARSE = {"sgd", "adagrad"}
"""Optimisers that take sparse gradients: with them the embedding's gradient holds only
the rows a mini-batch used, and a step touches those rows alone."""

PREDICT_BATCH = 256
"""Texts per forward pass when predicting (and validating), padded to the longest: 256
texts of 60,000 terms (the longest 20 Newsgroups posts) take 61 MB."""

_GLOBAL_GENERATOR = threading.Lock()
"""Held while a fit or partial_fit has torch's global generator forked: concurrent
fits in threads would save and restore each other's states (measured: four
concurrent fits with the same random_state and dropout made four different models)."""


def torch_device(name: Any) -> torch.device:
    """The device called ``name``, or InvalidParameterError if it is not there."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        msg = f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}."
        raise InvalidParameterError(msg) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = (
            f"device={name!r} but CUDA is not available to PyTorch here "
            f"(torch {torch.__version__}, a CPU-only build or no GPU); use device='cpu'."
        )
        raise InvalidParameterError(msg)
    if device.type not in ("cpu", "cuda"):
        msg = f"device must be 'cpu', 'cuda' or 'cuda:N'; got {name!r}."
        raise InvalidParameterError(msg)
    return device


def new_net(
    params: Mapping[str, Any], n_classes: int, seed: int, *, validate: bool, stratified: bool
) -> Any:
    """A skorch classifier for ``n_classes``, initialised, with the classifier's
    hyperparameters ``params``; ``validate`` adds the validation split (``stratified``
    or not) and the early stopping of ``fit``."""
    train_split = None
    callbacks: list[tuple[str, Any]] = []
    if validate and params["validation_fraction"] is not None:
        train_split = ValidSplit(
            params["validation_fraction"], stratified=stratified, random_state=seed
        )
    if validate and params["patience"] is not None:
        monitor = "train_loss" if train_split is None else "valid_loss"
        stopping = EarlyStopping(monitor=monitor, patience=params["patience"], load_best=True)
        callbacks.append(("early_stopping", stopping))
    net = skorch.NeuralNetClassifier(
        EmbeddingBagNetwork,
        module__n_buckets=params["n_buckets"],
        module__embedding_dim=params["embedding_dim"],
        module__hidden_layer_sizes=tuple(params["hidden_layer_sizes"]),
        module__n_classes=n_classes,
        module__dropout=float(params["dropout"]),
        module__seed=seed,
        module__sparse=params["optimizer"] in SPARSE,
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=getattr(torch.optim, OPTIMIZERS[params["optimizer"]]),
        lr=params["lr"],
        max_epochs=params["max_epochs"],
        batch_size=params["batch_size"],
        train_split=train_split,
        callbacks=callbacks,
        classes=list(range(n_classes)),
        iterator_train__shuffle=True,
        iterator_train__collate_fn=collate,
        iterator_train__generator=torch.Generator().manual_seed(seed),
        iterator_valid__collate_fn=collate,
        iterator_valid__batch_size=max(params["batch_size"], PREDICT_BATCH),
        # A DataLoader draws a seed for its workers from this generator on every
        # pass, by default torch's global one: predicting would then draw from it,
        # and shift the stream of a seeded fit running in another thread.
        iterator_valid__generator=torch.Generator(),
        device=str(torch_device(params["device"])),
        verbose=0,
    )
    return net.initialize()


@contextmanager
def own_torch_state(device_name: Any, seed: int) -> Iterator[None]:
    """Seed torch's global generator for what happens inside (the layers' default
    initialisation, dropout), and give back its state afterwards, so that training
    leaves torch's global state as it found it."""
    device = torch_device(device_name)
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


def for_partial_fit(net: Any) -> None:
    """Turn a network trained by ``fit`` into one ``partial_fit`` trains on: no
    validation split and no early stopping (whose copy of the best weights goes)."""
    net.set_params(train_split=None, callbacks=[])
    net.initialize_callbacks()  # set_params keeps the callbacks it had


def copy_net(net: Any, memo: dict[int, Any]) -> Any:
    """A deep copy of a skorch network, by ``copy.deepcopy`` of its attributes: the
    module first, so that the optimiser's references to its parameters become
    references to the copy's."""
    copied = object.__new__(type(net))
    memo[id(net)] = copied
    copy.deepcopy(net.module_, memo)
    copied.__dict__.update({name: copy.deepcopy(value, memo) for name, value in vars(net).items()})
    return copied
