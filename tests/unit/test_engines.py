"""Engine checks that need no accelerator."""

from __future__ import annotations

import pytest

from service.engines.tensorrt_engine import check_compute_capability
from service.errors import RuntimeUnavailable


def test_an_engine_for_another_gpu_architecture_is_refused_in_one_line():
    details = {"gpu": "NVIDIA H200", "compute_capability": "9.0"}
    check_compute_capability(details, "9.0", "NVIDIA H100 80GB HBM3")  # same architecture
    with pytest.raises(RuntimeUnavailable) as refused:
        check_compute_capability(details, "8.0", "NVIDIA A100-SXM4-80GB")
    message = str(refused.value)
    assert "\n" not in message
    assert "NVIDIA H200 (compute capability 9.0)" in message and "A100-SXM4-80GB, is 8.0" in message


def test_an_engine_that_does_not_record_it_is_loaded_as_before():
    check_compute_capability({"gpu": "NVIDIA H200"}, "8.0", "NVIDIA A100")
