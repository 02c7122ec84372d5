"""How the distillation student is chosen, including when no candidate fits the budget."""

from __future__ import annotations

import pytest

from service.optimize.distillation import CANDIDATES, choose_student, preflight, select_student
from service.optimize.options import BuildOptions


def row(name: str, macs: float, latency: float, probe: float | None) -> dict:
    return {
        "student": name,
        "macs_224": macs,
        "latency_ms_batch1_224_torch": latency,
        "within_budget": probe is not None,
        **({"probe_val_accuracy": probe} if probe is not None else {}),
    }


def test_the_fastest_within_tolerance_of_the_best_probe_wins():
    table = [
        row("accurate-slow", 1e9, 9.0, 0.95),
        row("close-fast", 1e9, 3.0, 0.945),
        row("poor-fastest", 1e9, 1.0, 0.80),
        row("over-budget", 9e9, 0.5, None),
    ]
    assert choose_student(table) == "close-fast"


def test_no_candidate_within_the_budget_is_a_clear_error():
    table = [row("a", 2e9, 1.0, None), row("b", 3e9, 2.0, None)]
    with pytest.raises(
        ValueError, match=r"no distillation student fits.*a 2\.00, b 3\.00.*--student"
    ):
        choose_student(table)


def test_select_student_with_an_impossible_budget_fails_before_training():
    from service.modeling import build_architecture
    from service.optimize.common import BuildContext
    from service.optimize.data import digits_task

    ctx = BuildContext("distilled", BuildOptions(), digits_task(32))
    teacher = build_architecture({**CANDIDATES["densenet-tiny"], "num_classes": 10})
    with pytest.raises(ValueError, match="no distillation student fits"):
        select_student(ctx, teacher, budget_fraction=0.0)


def test_an_unknown_student_is_refused_in_preflight():
    with pytest.raises(ValueError, match="unknown student 'resnet'; known: densenet-narrow"):
        preflight(BuildOptions(student="resnet"))
    preflight(BuildOptions(student="densenet-tiny"))
