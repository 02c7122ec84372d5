"""Logits to the answer a client reads: softmax, then the k most probable labels."""

from __future__ import annotations

import numpy as np

from service.errors import NonFiniteOutput
from service.schemas import Prediction


def require_finite(logits: np.ndarray) -> None:
    """Refuse outputs with NaN or infinity, which no JSON encoding can carry as a number."""
    if not np.isfinite(logits).all():
        raise NonFiniteOutput("the model's outputs for this image are not finite numbers")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    return probs / probs.sum(axis=-1, keepdims=True)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` highest of a 1-D ``scores``, highest first (ties: lower index)."""
    k = min(k, scores.size)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.lexsort((top, -scores[top]))]


def top_k_predictions(logits: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """Softmax then the k most probable classes, most probable first (ties: lower index)."""
    probs = softmax(logits)
    top = top_k_indices(probs, k)
    return [Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in top]
