"""asyncclf: async text classification with scikit-learn, on asyncio and trio."""

from importlib.metadata import PackageNotFoundError, version

from ._classifier import AsyncClassifier, default_estimator
from ._demo import load_sms_spam
from ._errors import (
    AsyncClfError,
    InvalidInputError,
    NotFittedError,
    OverloadedError,
    PersistenceError,
    UnsupportedEstimatorError,
)
from ._types import BatchStatistics, Prediction, Ranked

try:
    __version__ = version("asyncclf")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "AsyncClassifier",
    "AsyncClfError",
    "BatchStatistics",
    "InvalidInputError",
    "NotFittedError",
    "OverloadedError",
    "PersistenceError",
    "Prediction",
    "Ranked",
    "UnsupportedEstimatorError",
    "__version__",
    "default_estimator",
    "load_sms_spam",
]
