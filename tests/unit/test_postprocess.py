"""Softmax and top-k."""

from __future__ import annotations

import numpy as np

from service.postprocess import top_k_predictions

LABELS = [f"c{i}" for i in range(6)]


def test_most_probable_first_with_softmax_probabilities():
    logits = np.array([0.0, 3.0, 1.0, 2.0, -1.0, 0.5], dtype=np.float32)
    top = top_k_predictions(logits, LABELS, 3)
    assert [p.index for p in top] == [1, 3, 2]
    assert [p.label for p in top] == ["c1", "c3", "c2"]
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose([p.probability for p in top], expected[[1, 3, 2]], rtol=1e-6)


def test_k_larger_than_the_classes_returns_every_class():
    top = top_k_predictions(np.arange(6, dtype=np.float32), LABELS, 50)
    assert [p.index for p in top] == [5, 4, 3, 2, 1, 0]
    assert abs(sum(p.probability for p in top) - 1.0) < 1e-9


def test_ties_keep_the_lower_index_first():
    top = top_k_predictions(np.zeros(6, dtype=np.float32), LABELS, 4)
    assert [p.index for p in top] == [0, 1, 2, 3]


def test_huge_logits_do_not_overflow():
    top = top_k_predictions(np.array([1e30, 0, -1e30, 0, 0, 0], dtype=np.float32), LABELS, 2)
    assert top[0].index == 0 and top[0].probability == 1.0
    assert all(np.isfinite(p.probability) for p in top)
