"""The TensorRT paths that run without CUDA: clear errors, and the graph capture itself."""

from __future__ import annotations

import pytest

from service.errors import RuntimeUnavailable
from service.manifest import read_manifest
from tests.support import fake_manifest, run_cli


def test_tensorrt_build_without_cuda_is_a_clear_error(tmp_path):
    result = run_cli("build", "tensorrt", "--out", str(tmp_path), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    assert "needs an NVIDIA GPU with CUDA" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "tensorrt").exists()


def test_tensorrt_engine_without_cuda_is_a_clear_error(build):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU tests cover this path")
    from service.engines.tensorrt_engine import TensorRTEngine

    variant_dir = build("baseline")
    manifest = read_manifest(variant_dir)
    engine = TensorRTEngine(manifest, variant_dir / "model.ep", threads=1)
    with pytest.raises(RuntimeUnavailable, match="needs an NVIDIA GPU with CUDA"):
        engine.load()


@pytest.mark.parametrize(
    "failure",
    [
        'raise Exception("libnvinfer.so.11: cannot open shared object file")',
        'raise OSError("libnvinfer_plugin.so.11: undefined symbol")',
        'raise ImportError("No module named tensorrt")',
    ],
)
def test_a_broken_tensorrt_install_is_one_clear_line(tmp_path, monkeypatch, failure):
    """``import torch_tensorrt`` with missing TensorRT libraries raises a bare Exception (not
    ImportError); the build and the engine both turn any of these into RuntimeUnavailable."""
    import sys

    import torch

    from service.engines.tensorrt_engine import TensorRTEngine
    from service.optimize.tensorrt import require_cuda

    package = tmp_path / "torch_tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text(failure + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeUnavailable, match="TensorRT unavailable: import torch_tensorrt"):
        require_cuda()
    with pytest.raises(RuntimeUnavailable, match="TensorRT unavailable"):
        TensorRTEngine(fake_manifest(), tmp_path / "model.ep", threads=1).load()


def test_tensorrt_graph_capture_runs_on_cpu(build):
    """The graph handed to torch-tensorrt: batch dynamic from 1 to max, outputs equal eager."""
    import torch

    from service.modeling import load_torch_model
    from service.optimize.tensorrt import engine_shapes, export_program

    variant_dir = build("baseline")
    manifest = read_manifest(variant_dir)
    model = load_torch_model(manifest, variant_dir / "model.pt").eval()
    size = manifest.preprocess.crop_size
    program = export_program(model, size, opt_batch=4, max_batch=8)
    assert [(r.lower, r.upper) for r in program.range_constraints.values()] == [(1, 8)]
    graph = program.module()
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            assert torch.allclose(graph(x), model(x), atol=1e-4)
    with pytest.raises(ValueError, match="trt-batch-opt"):
        engine_shapes(size, opt_batch=16, max_batch=8)
    # --trt-batch-opt 1 (torch.export would specialize an example batch of 1: "Constraints
    # violated") and --trt-batch-max 1 (a Dim with min == max: AssertionError) both export.
    x = torch.randn(1, 3, size, size)
    for opt, most, ranges in ((1, 8, [(1, 8)]), (1, 1, [])):
        program = export_program(model, size, opt_batch=opt, max_batch=most)
        assert [(r.lower, r.upper) for r in program.range_constraints.values()] == ranges
        with torch.no_grad():
            assert torch.allclose(program.module()(x), model(x), atol=1e-4)


def test_a_driver_too_old_for_torchs_cuda_build_is_named_as_such(monkeypatch, tmp_path):
    """torch.cuda.is_available() is False with a warning when the driver predates torch's CUDA
    build; every CUDA path says so instead of "no GPU"."""
    import warnings

    import torch

    from service.engines.base import cuda_unavailable
    from service.engines.torch_engine import TorchEngine
    from service.optimize.tensorrt import require_cuda

    def old_driver() -> bool:
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version "
            "12040). Please update your GPU driver.",
            UserWarning,
            stacklevel=2,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    assert "driver is too old" in cuda_unavailable(torch)
    with pytest.raises(RuntimeUnavailable, match="driver is too old"):
        require_cuda()
    from service.manifest import RuntimeArtifact

    torch_artifact = RuntimeArtifact(
        file="model.pt", format="state_dict", sha256="0" * 64, size_bytes=0
    )
    manifest = fake_manifest().model_copy(update={"artifacts": {"torch": torch_artifact}})
    engine = TorchEngine(manifest, tmp_path / "model.pt", threads=1, device="cuda")
    with pytest.raises(RuntimeUnavailable, match="DEVICE=cuda but the NVIDIA driver is too old"):
        engine.load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_unavailable(torch) == "torch sees no CUDA device here"


def test_an_engine_for_another_tensorrt_or_a_broken_file_is_refused_in_one_line(
    tmp_path, monkeypatch
):
    """A plan runs only on the TensorRT that built it; a file torch.export cannot read is
    named with what the manifest says it is, not a traceback from a fallback loader."""
    import sys

    import torch

    from service.engines import tensorrt_engine
    from service.engines.base import nvidia_driver_version
    from service.engines.tensorrt_engine import TensorRTEngine, check_tensorrt_version
    from service.manifest import RuntimeArtifact

    check_tensorrt_version({"tensorrt": "11.1.0"}, "11.1.0")
    check_tensorrt_version({}, "11.1.0")  # an engine from before versions were recorded
    with pytest.raises(RuntimeUnavailable, match=r"built with TensorRT 11\.1\.0; this machine has"):
        check_tensorrt_version({"tensorrt": "11.1.0"}, "10.13.2")

    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27\n")
    assert nvidia_driver_version(proc) == "580.65.06"
    assert nvidia_driver_version(tmp_path / "absent") == "unknown"

    package = tmp_path / "torch_tensorrt"
    package.mkdir()
    (package / "__init__.py").write_text('__version__ = "2.14.0"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "NVIDIA H200")
    details = {
        "gpu": "NVIDIA H200",
        "compute_capability": "9.0",
        "tensorrt": "11.1.0",
        "cuda": "13.2",
        "image_size": 8,
        "batch_max": 64,
    }
    artifact = RuntimeArtifact(
        file="model.ep",
        format="torch-tensorrt-exported-program",
        sha256="0" * 64,
        size_bytes=0,
        details=details,
    )
    manifest = fake_manifest().model_copy(update={"artifacts": {"tensorrt": artifact}})
    (tmp_path / "model.ep").write_bytes(b"not an exported program")
    engine = TensorRTEngine(manifest, tmp_path / "model.ep", threads=1)
    monkeypatch.setattr(tensorrt_engine, "tensorrt_version", lambda: "10.13.2")
    with pytest.raises(RuntimeUnavailable, match=r"install tensorrt-cu13==11\.1\.0"):
        engine.load()
    monkeypatch.setattr(tensorrt_engine, "tensorrt_version", lambda: "11.1.0")
    with pytest.raises(
        RuntimeUnavailable,
        match=r"could not load the TensorRT engine model\.ep "
        r"\(built on NVIDIA H200, compute capability 9\.0, TensorRT 11\.1\.0",
    ):
        engine.load()


def test_the_engine_is_checked_against_fp32_with_or_without_labelled_data():
    import torch
    from torch.utils.data import TensorDataset

    from service.optimize.tensorrt import parity

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10)
    ).eval()

    def close(x):  # an engine a rounding away from fp32
        return model(x.half().float()) + 1e-4

    def broken(x):
        return torch.zeros(len(x), 10)

    synthetic = parity(close, model, None, 16, 8)
    assert synthetic["checked_on"].startswith("32 random inputs (no labelled data")
    assert "accuracy_top1" not in synthetic and synthetic["max_abs_logit_diff_vs_fp32"] < 1e-2
    with pytest.raises(RuntimeError, match=r"differ from fp32 .* on random inputs"):
        parity(broken, model, None, 16, 8)

    images = torch.randn(40, 3, 16, 16)
    labelled = TensorDataset(images, model(images).argmax(1).detach())
    measured = parity(close, model, labelled, 16, 8)
    assert measured["accuracy_image_size"] == 16 and measured["agreement_top1_vs_fp32"] >= 0.99
    assert measured["checked_on"] == "40 held-out images resized to 16x16"
    with pytest.raises(RuntimeError, match="agrees with fp32 on"):
        parity(broken, model, labelled, 16, 8)


def test_the_fp32_reference_runs_without_tf32():
    import torch

    from service.engines.torch_engine import strict_fp32

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    with strict_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
