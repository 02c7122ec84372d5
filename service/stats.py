"""Uncertainty of the accuracy figures: each top-1's interval and each paired difference.

Every variant is measured on the same test images, so two variants are compared image by
image: only the images one gets right and the other wrong (the discordant pairs) carry the
difference. The exact McNemar test is the binomial test of those pairs against 1/2; the
interval of the difference is the Wald interval for paired proportions (Agresti, *An
Introduction to Categorical Data Analysis*, 2nd ed., section 8.1). A top-1 accuracy's own
interval is Wilson's score interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, norm

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05


def accuracy_interval(correct: int, total: int) -> tuple[float, float]:
    """Wilson score interval of ``correct / total`` at ``CONFIDENCE``."""
    ci = binomtest(correct, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same images."""

    delta: float
    low: float
    high: float
    p_value: float  # exact McNemar (two-sided)
    a_only: int  # images A gets right and B wrong
    b_only: int
    images: int

    @property
    def significant(self) -> bool:
        """Whether the difference is significant at ``SIGNIFICANCE``."""
        return self.p_value < SIGNIFICANCE


def paired_difference(a_correct: np.ndarray, b_correct: np.ndarray) -> PairedDifference:
    """A's accuracy minus B's, from per-image correctness on the same images."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired correctness needs two equal 1-D arrays, got {a.shape}, {b.shape}")
    return paired_from_counts(int((a & ~b).sum()), int((~a & b).sum()), len(a))


def paired_from_counts(a_only: int, b_only: int, images: int) -> PairedDifference:
    """The paired difference from its discordant counts out of ``images`` pairs."""
    n = images
    delta = (a_only - b_only) / n
    variance = ((a_only + b_only) / n - delta**2) / n
    half = norm.ppf(0.5 + CONFIDENCE / 2) * math.sqrt(max(variance, 0.0))
    discordant = a_only + b_only
    p_value = binomtest(a_only, discordant, 0.5).pvalue if discordant else 1.0
    return PairedDifference(delta, delta - half, delta + half, float(p_value), a_only, b_only, n)


def load_evaluation(variant_dir: Path, label: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-test-image correctness, test labels) of one artifact label, from the build's
    ``evaluation.npz``; None when the build recorded none for that label."""
    path = variant_dir / "evaluation.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        if label not in data.files or label == "labels":
            return None
        labels = data["labels"]
        return data[label] == labels, labels
