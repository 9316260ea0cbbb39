"""Pin the public names, so any change to them is deliberate."""

from __future__ import annotations

import types

import sklearn.exceptions

import asyncclf


def test_exported_names() -> None:
    """asyncclf exports exactly these names, sorted."""
    assert asyncclf.__all__ == [
        "AsyncClassifier",
        "AsyncClfError",
        "BatchStatistics",
        "DaskExecutor",
        "Executor",
        "FailedPrediction",
        "InvalidInputError",
        "InvalidParameterError",
        "LearnReport",
        "NotFittedError",
        "OnError",
        "Overload",
        "OverloadedError",
        "PersistenceError",
        "Prediction",
        "ProcessExecutor",
        "Progress",
        "Ranked",
        "ThreadExecutor",
        "UnsupportedEstimatorError",
        "__version__",
        "default_estimator",
        "load_sms_spam",
        "online_estimator",
    ]
    for name in asyncclf.__all__:
        assert hasattr(asyncclf, name)


def test_every_public_attribute_is_exported() -> None:
    """``__all__`` is exactly the package's public attributes (its subpackages aside):
    nothing leaks into the namespace unlisted (httpx's test_exported_members.py)."""
    public = {
        name
        for name, value in vars(asyncclf).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(asyncclf.__all__) - {"__version__"}


def test_exception_tree() -> None:
    """Errors derive from AsyncClfError and the standard classes callers expect."""
    assert issubclass(asyncclf.NotFittedError, sklearn.exceptions.NotFittedError)
    assert issubclass(asyncclf.InvalidInputError, TypeError)
    assert issubclass(asyncclf.InvalidInputError, ValueError)
    assert issubclass(asyncclf.InvalidParameterError, ValueError)
    assert issubclass(asyncclf.InvalidParameterError, TypeError)
    assert issubclass(asyncclf.UnsupportedEstimatorError, TypeError)
    for name in (
        "NotFittedError",
        "InvalidInputError",
        "InvalidParameterError",
        "UnsupportedEstimatorError",
    ):
        assert issubclass(getattr(asyncclf, name), asyncclf.AsyncClfError)
    assert issubclass(asyncclf.OverloadedError, asyncclf.AsyncClfError)
    assert issubclass(asyncclf.PersistenceError, asyncclf.AsyncClfError)


def test_version_comes_from_package_metadata() -> None:
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert asyncclf.__version__ == version("asyncclf")
