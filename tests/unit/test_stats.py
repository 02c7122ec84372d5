"""The interval and paired-difference code against published worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from service.stats import accuracy_interval, paired_difference, paired_from_counts


def test_wilson_interval_matches_newcombes_worked_example():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662.
    low, high = accuracy_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_interval_stays_inside_zero_and_one():
    low, high = accuracy_interval(10, 10)
    assert 0.69 < low < 0.73 and high == pytest.approx(1.0)
    assert accuracy_interval(0, 10)[0] == pytest.approx(0.0)


def test_paired_interval_matches_agrestis_approval_ratings():
    # Agresti, An Introduction to Categorical Data Analysis, section 8.1: 1600 people rate
    # the prime minister twice; 150 approve then disapprove, 86 the reverse. Difference 0.04,
    # standard error 0.0095, 95 % interval (0.021, 0.059), McNemar z = 4.17 (p < 0.0001).
    diff = paired_from_counts(150, 86, 1600)
    assert diff.delta == pytest.approx(0.04)
    assert (round(diff.low, 3), round(diff.high, 3)) == (0.021, 0.059)
    assert diff.p_value < 1e-4 and diff.significant


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [
        (0, 6, 2 * 0.5**6),  # every discordant pair one way: 2 * (1/2)^6
        (1, 5, 2 * (1 + 6) / 64),  # P(X <= 1) doubled, X ~ Bin(6, 1/2)
        (3, 3, 1.0),
        (0, 0, 1.0),  # no discordant pairs: nothing to test
    ],
)
def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs(a_only, b_only, p):
    assert paired_from_counts(a_only, b_only, 100).p_value == pytest.approx(p)


def test_paired_difference_counts_only_the_images_one_gets_right():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    b = np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 1], dtype=bool)
    diff = paired_difference(a, b)
    assert (diff.a_only, diff.b_only, diff.images) == (3, 1, 10)
    assert diff.delta == pytest.approx(a.mean() - b.mean())
    assert not diff.significant  # 3 against 1 cannot tell


def test_identical_predictions_have_a_zero_width_interval():
    same = np.array([True, False, True])
    diff = paired_difference(same, same)
    assert (diff.delta, diff.low, diff.high, diff.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_paired_difference_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="equal 1-D"):
        paired_difference(np.ones(3, bool), np.ones(4, bool))
