"""The variant table: every model variant the project builds and serves, declared once.

Settings validation, the ``densenet`` CLI (choices, help, ``densenet list``), the build
pipeline's runtime filter, the technique lookup, the Makefile and the tests all read this
table. A variant names the variant it is made from (``source``): composed variants such as
``distilled-quantized`` apply a technique to another variant's result, and a source always
comes before the variants made from it, so building in table order builds sources first.
Runtimes are the engine registry's names (``service.engines.list_runtimes``). Torch-free: the
ONNX Runtime server imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.errors import UnknownName


@dataclass(frozen=True)
class Variant:
    """One buildable, servable variant."""

    name: str
    technique: str  # module under ``service.optimize`` that builds it
    runtimes: tuple[str, ...]  # the runtimes it builds artifacts for, in build order
    cpu: bool  # served by the CPU revision (built by ``make artifacts``)
    description: str
    source: str | None = "baseline"  # the variant it is made from (None: made from scratch)
    teacher: str | None = None  # the variant that teaches its fine-tuning, if not its source


_TABLE = (
    Variant(
        "baseline",
        "baseline",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="DenseNet-121 fp32: ImageNet weights, or trained on the digits task",
        source=None,
    ),
    Variant(
        "quantized",
        "static_int8",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="static int8 post-training quantization, calibrated on training images",
    ),
    Variant(
        "quantized-dynamic",
        "dynamic_int8",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="dynamic int8 quantization of the Linear layers (the classifier)",
    ),
    Variant(
        "pruned",
        "pruning",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="structured channel pruning, fine-tuned with the baseline as teacher",
    ),
    Variant(
        "distilled",
        "distillation",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="a compact student distilled from the baseline",
    ),
    Variant(
        "distilled-quantized",
        "static_int8",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="the distilled student, static int8 (calibrated as quantized is)",
        source="distilled",
    ),
    Variant(
        "distilled-pruned",
        "pruning",
        ("torch", "onnxruntime", "openvino"),
        cpu=True,
        description="the distilled student, channel-pruned, fine-tuned by the baseline",
        source="distilled",
        teacher="baseline",
    ),
    Variant(
        "tensorrt",
        "tensorrt",
        ("tensorrt",),
        cpu=False,
        description="the baseline compiled to an fp16 TensorRT engine (needs CUDA)",
    ),
)
VARIANTS: dict[str, Variant] = {v.name: v for v in _TABLE}


def list_variants(*, cpu_only: bool = False) -> list[str]:
    """Variant names in table order (only the CPU revision's with ``cpu_only``)."""
    return [v.name for v in _TABLE if v.cpu or not cpu_only]


def get_variant(name: str) -> Variant:
    """The table row for ``name``, or UnknownName listing the known names."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UnknownName(
            f"unknown variant {name!r}; known: {', '.join(list_variants())}"
        ) from None


def lineage(name: str) -> list[str]:
    """``name``'s sources, nearest first (``distilled-quantized`` -> distilled, baseline)."""
    chain: list[str] = []
    source = get_variant(name).source
    while source is not None:
        chain.append(source)
        source = get_variant(source).source
    return chain


def describe() -> str:
    """One line per variant: name, runtimes, description (CLI help and ``densenet list -v``)."""
    return "\n".join(
        f"{v.name:<20} {'[' + ', '.join(v.runtimes) + ']':<22} {'CPU' if v.cpu else 'GPU'}  "
        f"{v.description}"
        for v in _TABLE
    )
