"""asyncclf: async text classification with scikit-learn, on asyncio and trio."""

from ._classifier import AsyncClassifier
from ._demo import load_sms_spam
from ._errors import (
    AsyncClfError,
    InvalidInputError,
    InvalidParameterError,
    NotFittedError,
    OverloadedError,
    PersistenceError,
    UnsupportedEstimatorError,
)
from ._executors.base import Executor
from ._executors.dask import DaskExecutor
from ._executors.processes import ProcessExecutor
from ._executors.threads import ThreadExecutor
from ._model import default_estimator, online_estimator
from ._types import (
    BatchStatistics,
    FailedPrediction,
    LearnReport,
    OnError,
    Overload,
    Prediction,
    Progress,
    Ranked,
)
from ._version import __version__

__all__ = [
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
