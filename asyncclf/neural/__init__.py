"""A neural text classifier in the fastText style, trained with skorch (optional).

:class:`EmbeddingBagClassifier` is a scikit-learn classifier taking a list of ``str``,
so it plugs into ``AsyncClassifier(EmbeddingBagClassifier())`` like any other: hashed
words and word bigrams, the mean of their rows of a ``torch.nn.EmbeddingBag``, dense
layers, softmax. ``AsyncClassifier.save`` writes it without pickle (safetensors weights,
JSON in the file's header) and ``AsyncClassifier.load`` checks it like any model file.

Needs the ``torch`` extra (PyTorch, skorch, safetensors): ``pip install 'asyncclf[torch]'``.
"""

try:
    import safetensors
    import skorch
    import torch
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = (
        f"asyncclf.neural needs PyTorch, skorch and safetensors, and one is missing "
        f"({exc}). Install them with: pip install 'asyncclf[torch]'"
    )
    raise ImportError(msg) from exc

from ._estimator import EmbeddingBagClassifier

__all__ = ["EmbeddingBagClassifier"]

del safetensors, skorch, torch
