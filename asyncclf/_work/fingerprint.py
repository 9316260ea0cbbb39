"""A model's identity: the same fingerprint for the same model in every process."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from joblib.hashing import NumpyHasher

from .packing import pack, vocabulary_of


class _Fingerprint(NumpyHasher):  # type: ignore[misc]
    """joblib's hasher, blind to private ``_..._id`` ints: object ids, which differ from
    process to process (scikit-learn's text vectorisers keep ``_stop_words_id``)."""

    def _batch_setitems(self, items: Any, *args: Any) -> None:
        kept = [
            (key, value)
            for key, value in items
            if not (
                isinstance(key, str)
                and key.startswith("_")
                and key.endswith("_id")
                and type(value) is int
            )
        ]
        super()._batch_setitems(iter(kept), *args)


def fingerprint(estimator: Any) -> str:
    """A model's identity: 16 hex digits of a hash of all it learned and was set to.

    joblib's hash (made for cache keys that hold across processes: it hashes arrays by
    their bytes, sorts dicts and sets, and ignores which objects are shared), with
    SHA-1, of the estimator with its vocabularies replaced by their terms in column
    order, and without private ``_..._id`` ints (see :class:`_Fingerprint`); memory-mapped
    arrays count as the arrays they hold. The same
    model gives the same fingerprint in any process with the same scikit-learn,
    however its vocabularies' dicts were built (fitted, or rebuilt by ``load``); a
    refit on other data or with other settings gives another. (Sorting a dict of
    130,000 terms took joblib 0.4 s; in column order they cost a few ms.)

    Not a security check: pin a file's SHA-256 for that. An estimator this cannot hash
    (one that cannot be pickled, or whose vocabulary holds other terms than strings)
    gets a random fingerprint, unique to this copy.
    """
    try:
        return _fingerprint(estimator)
    except Exception:  # pickling raises PicklingError, or what a __reduce__ raises
        return os.urandom(8).hex()


NETWORK_STATE = "_asyncclf_state_"
"""An estimator with this method (and ``_asyncclf_restore_``, a classmethod) is a
network: ``state()`` returns a JSON-able description of it and its weights as numpy
arrays, and ``restore(description, arrays)`` builds it back. Model files store it so
(see ``_persistence``), and its fingerprint hashes that (see docs/estimators.md)."""


def _fingerprint(estimator: Any) -> str:
    hasher = _Fingerprint(hash_name="sha1", coerce_mmap=True)
    if hasattr(estimator, NETWORK_STATE):
        # What the network's file would hold: pickling a torch module (as joblib's
        # hash would) took 18 s for 2**20 x 100 weights and gave other bytes each time.
        description, arrays = getattr(estimator, NETWORK_STATE)()
        content = (json.dumps(description, sort_keys=True), sorted(arrays.items()))
        return str(hasher.hash(content))[:16]
    packed, vocabularies = pack(estimator)
    ordered = {}
    for name, arrays in vocabularies.items():
        order = np.argsort(arrays["columns"], kind="stable")
        terms = list(vocabulary_of(arrays))
        # One bytes object and two arrays: hashed in a call each, where a list of
        # terms would cost a Python call per term.
        ordered[name] = (
            arrays["columns"][order],
            arrays["lengths"][order],
            "".join([terms[i] for i in order.tolist()]).encode("utf-8", "surrogatepass"),
        )
    return str(hasher.hash((packed, ordered)))[:16]
