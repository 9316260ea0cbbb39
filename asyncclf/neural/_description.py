"""Describe a fitted network as JSON and arrays, and check such a description: what a
model file holds of an :class:`~asyncclf.neural.EmbeddingBagClassifier`.

The description holds the class, the hyperparameters, the classes and the network's
shape; the arrays are the weights, by the names of the network's state dict. The
optimiser's state is not kept. ``asyncclf._persistence`` writes both into, and reads
them from, a model file (safetensors weights, JSON in its header); nothing here touches
a file.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import skorch
import torch
from numpy.typing import NDArray
from sklearn.utils.validation import check_is_fitted

from ._network import state_shapes

FORMAT = "asyncclf-network"
FORMAT_VERSION = 1


def describe(estimator: Any) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """The fitted ``estimator`` as JSON-able values, and its weights as arrays.

    Raises:
        NotFittedError: the estimator is not fitted.
        ValueError: a class label or hyperparameter JSON cannot hold as it is.
    """
    check_is_fitted(estimator)
    params = {
        name: value.item() if isinstance(value, np.generic) else value
        for name, value in estimator.get_params(deep=False).items()
    }
    params["hidden_layer_sizes"] = [int(size) for size in params["hidden_layer_sizes"]]
    if params["random_state"] is not None and not isinstance(params["random_state"], int):
        params["random_state"] = None  # a RandomState: its use is done once fitted
    classes = estimator.classes_.tolist()
    for what, value in (("classes", classes), ("parameters", params)):
        if not _same(json.loads(json.dumps(value)), value):
            msg = f"The {what} {value!r} cannot be saved as JSON without changing them."
            raise ValueError(msg)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "params": params,
        "classes": classes,
        "classes_repr": [repr(label) for label in classes],
        "network": _network_of(params, len(classes)),
        "versions": {"torch": torch.__version__, "skorch": skorch.__version__},
    }
    arrays = {
        name: tensor.detach().cpu().numpy().copy()
        for name, tensor in estimator.net_.module_.state_dict().items()
    }
    return description, arrays


def check(description: Any, arrays: dict[str, NDArray[Any]], name: str) -> dict[str, Any]:
    """Check a description of a network of the class ``name`` and its weights; return
    its hyperparameters (``hidden_layer_sizes`` a tuple).

    Everything is checked before anything is built: a small file declaring a huge
    network must not make it allocated (2**24 x 16 took 2.5 GB, weights and optimiser
    state).

    Raises:
        ValueError: the description or the arrays do not describe such a network.
    """
    if not isinstance(description, dict) or (
        description.get("format"),
        description.get("format_version"),
    ) != (FORMAT, FORMAT_VERSION):
        found = description.get("format") if isinstance(description, dict) else description
        msg = f"Not a network description of format {FORMAT} version {FORMAT_VERSION}: {found!r}."
        raise ValueError(msg)
    if description.get("class") != name:
        msg = f"The description is of a {description.get('class')!r}, not a {name}."
        raise ValueError(msg)
    params = dict(description["params"])
    network, expected = description["network"], _network_of(params, len(description["classes"]))
    if network != expected:
        msg = f"The network's shape {network!r} does not match its parameters {expected!r}."
        raise ValueError(msg)
    shapes = state_shapes(
        network["n_buckets"],
        network["embedding_dim"],
        network["hidden_layer_sizes"],
        network["n_classes"],
    )
    found = {key: tuple(value.shape) for key, value in arrays.items()}
    if found != shapes:
        msg = f"The weights {found!r} do not match the network, which has {shapes!r}."
        raise ValueError(msg)
    if not all(np.isfinite(value).all() for value in arrays.values()):
        msg = "The weights hold NaN or infinite values."
        raise ValueError(msg)
    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    return params


def _network_of(params: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """The network's shape that the hyperparameters ``params`` give."""
    return {
        "n_buckets": params["n_buckets"],
        "embedding_dim": params["embedding_dim"],
        "hidden_layer_sizes": list(params["hidden_layer_sizes"]),
        "n_classes": n_classes,
        "dropout": float(params["dropout"]),
    }


def _same(left: Any, right: Any) -> bool:
    """Whether two JSON-like values are equal with the same types all the way down
    (``1`` and ``1.0`` or ``True`` are equal in Python but not the same label)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)
