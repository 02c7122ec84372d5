"""A build on a small Fashion-MNIST subset: class names, intervals, per-image predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.optimize.data import FASHION_DIR, FASHION_LABELS
from tests.support import run_cli

pytestmark = pytest.mark.skipif(
    not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"dataset-fashion-mnist is not installed ({FASHION_DIR}); make test installs it",
)


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fashion")
    result = run_cli(
        "build", "baseline", "--task", "fashion", "--train-images", "300", "--test-images",
        "200", "--epochs", "1", "--runtime", "torch", "--out", str(out), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_fashion_build_labels_its_classes_and_records_intervals(fashion_dir):
    manifest = json.loads((fashion_dir / "baseline" / "manifest.json").read_text())
    assert manifest["task"] == "fashion" and manifest["labels"] == FASHION_LABELS
    metrics = manifest["metrics"]
    assert metrics["test_images"] == 200
    assert "Fashion-MNIST test set: 200 held-out images" in metrics["accuracy_dataset"]
    assert "subset" in metrics["accuracy_dataset"]  # a subset says so
    low, high = metrics["accuracy_top1_ci95"]
    assert low < metrics["accuracy_top1"] < high
    assert manifest["build_settings"]["train"]["batch_size"] == 128  # the task's schedule
    assert manifest["build_settings"]["epochs_run"] == 1
    evaluation = metrics["evaluation"]
    assert evaluation["labels"] == ["torch"] and evaluation["images"] == 200
    with np.load(fashion_dir / "baseline" / evaluation["file"]) as data:
        labels = data["labels"]
        assert len(labels) == 200 and labels.max() <= 9
        assert (data["torch"] == labels).mean() == pytest.approx(metrics["accuracy_top1"])


def test_skip_built_skips_the_same_task_and_refuses_another(fashion_dir):
    same = run_cli(
        "build", "baseline", "--task", "fashion", "--out", str(fashion_dir), "--skip-built"
    )
    assert same.returncode == 0 and "already built for fashion" in same.stdout
    other = run_cli(
        "build", "baseline", "--task", "digits", "--out", str(fashion_dir), "--skip-built"
    )
    assert other.returncode == 2
    assert "was built for task 'fashion', not 'digits'" in other.stderr


def test_without_the_data_the_build_names_the_package(tmp_path):
    result = run_cli(
        "build", "baseline", "--task", "fashion", "--data", str(tmp_path), "--out", str(tmp_path)
    )
    assert result.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
