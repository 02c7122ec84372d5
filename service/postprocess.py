"""Logits to the answer a client reads: softmax, then the k most probable labels."""

from __future__ import annotations

import numpy as np

from service.schemas import Prediction


def top_k_predictions(logits: np.ndarray, labels: list[str], k: int) -> list[Prediction]:
    """Softmax then the k most probable classes, most probable first (ties: lower index)."""
    shifted = logits.astype(np.float64) - logits.max()
    probs = np.exp(shifted)
    probs /= probs.sum()
    k = min(k, probs.size)
    top = np.argpartition(-probs, k - 1)[:k]
    top = top[np.lexsort((top, -probs[top]))]
    return [Prediction(label=labels[i], index=int(i), probability=float(probs[i])) for i in top]
