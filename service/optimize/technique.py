"""The technique contract, and the lookup from the variant table to the module that builds it.

A technique is a module under ``service.optimize`` named in ``service.variants``. The pipeline
calls, in order: ``preflight(options)`` (refuse cheaply, before data or the source model is
loaded), checks the task has training images if ``NEEDS_DATA`` says so (before a missing source
is built), ``build(ctx)`` (make the model), then for each runtime in the variant's table row,
the technique's own exporter from ``EXPORTERS`` if it has one, else the pipeline's default
(``torch``: the state dict; ``onnxruntime``: a checked fp32 ONNX export; ``openvino``: the
``onnxruntime`` artifact's file, checked on OpenVINO; the static int8 variants export their own
NNCF file for OpenVINO).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol, cast, runtime_checkable

from service.optimize.common import BuildContext, Built, Exporter
from service.optimize.options import BuildOptions
from service.variants import get_variant

DEFAULT_EXPORT_RUNTIMES = ("torch", "onnxruntime", "openvino")


@runtime_checkable
class Technique(Protocol):
    """What every technique module defines."""

    @property
    def EXPORTERS(self) -> Mapping[str, Exporter]:  # noqa: N802 - a module-level constant
        """Runtime -> exporter, for the runtimes whose artifact is not the default export."""

    @property
    def NEEDS_DATA(self) -> str | None:  # noqa: N802 - a module-level constant
        """What the technique needs labelled training images for ("calibration", ...), or None;
        the pipeline checks the task has them before it builds a source."""

    def preflight(self, options: BuildOptions) -> None:
        """Raise (ConfigurationError/ValueError) when this build cannot succeed here."""

    def build(self, ctx: BuildContext) -> Built:
        """Make the variant's model from ``ctx`` (its source, task data and options)."""


class TechniqueMismatch(TypeError):
    """A technique module and its variant-table row disagree."""


def get_technique(variant: str) -> Technique:
    """The module that builds ``variant``, checked against its table row.

    Raises:
        UnknownName: ``variant`` is not in the table.
        TechniqueMismatch: the module lacks part of the contract, or cannot export a runtime
            the table says it builds, or exports one the table does not list.
    """
    row = get_variant(variant)
    module = importlib.import_module(f"service.optimize.{row.technique}")
    if not isinstance(module, Technique):
        raise TechniqueMismatch(
            f"{module.__name__} does not implement the Technique contract "
            "(EXPORTERS, NEEDS_DATA, preflight, build)"
        )
    exportable = set(DEFAULT_EXPORT_RUNTIMES) | set(module.EXPORTERS)
    if missing := [r for r in row.runtimes if r not in exportable]:
        raise TechniqueMismatch(
            f"variant {variant!r} lists runtime(s) {missing} but {module.__name__} has no "
            "exporter for them"
        )
    if unlisted := sorted(set(module.EXPORTERS) - set(row.runtimes)):
        raise TechniqueMismatch(
            f"{module.__name__} exports {unlisted}, which variant {variant!r} does not list"
        )
    return cast(Technique, module)
