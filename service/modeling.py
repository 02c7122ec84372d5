"""Architectures and safe loading of torch artifacts.

A torch artifact is a plain ``state_dict`` loaded with ``torch.load(weights_only=True)``;
the module structure is rebuilt from the manifest's ``architecture`` spec, never unpickled:

* fp32 (baseline, distilled): build the torchvision architecture, load the weights;
* pruned: build the unpruned architecture, then resize every conv/bn/linear to the shapes in
  the state dict (torch-pruning is not needed at serve time);
* quantized (FX int8): rebuild the same FX graph with ``prepare_fx``/``convert_fx`` and load the
  int8 weights, scales and zero points into it;
* quantized-dynamic: ``quantize_dynamic`` the rebuilt model, then load its packed weights.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from service.manifest import Manifest

# torchvision's published DenseNet weights use "norm.1"/"conv.2"-style keys from an old
# nn.Module layout; current modules name them "norm1"/"conv2" (torchvision's own regex, plus
# num_batches_tracked for files re-saved from a newer torch). Files from before that buffer
# existed simply lack it, and BatchNorm fills it in on load.
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def remap_legacy_densenet_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``features.denseblock1.denselayer1.norm.1.weight`` -> ``...norm1.weight``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = _LEGACY_DENSENET_KEY.match(key)
        out[match.group(1) + match.group(2) if match else key] = value
    return out


def build_architecture(spec: Mapping[str, Any]) -> nn.Module:
    """Instantiate an (untrained, fp32) module from a manifest architecture spec."""
    name = spec["name"]
    num_classes = int(spec["num_classes"])
    if name == "densenet121":
        return models.densenet121(weights=None, num_classes=num_classes)
    if name == "densenet":
        return models.DenseNet(
            growth_rate=int(spec["growth_rate"]),
            block_config=tuple(spec["block_config"]),
            num_init_features=int(spec["num_init_features"]),
            bn_size=int(spec.get("bn_size", 4)),
            num_classes=num_classes,
        )
    if name in {"mobilenet_v3_small", "mobilenet_v3_large", "resnet18"}:
        builder = getattr(models, name)
        return builder(weights=None, num_classes=num_classes)
    raise ValueError(f"unknown architecture {name!r}")


def _set_submodule(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Resize conv/batch-norm/linear layers to the shapes a (pruned) state dict holds."""
    for name, module in list(model.named_modules()):
        weight = state_dict.get(f"{name}.weight")
        if weight is None:
            continue
        if isinstance(module, nn.Conv2d) and weight.shape != module.weight.shape:
            new: nn.Module = nn.Conv2d(
                weight.shape[1] * module.groups,
                weight.shape[0],
                module.kernel_size,  # type: ignore[arg-type]
                stride=module.stride,  # type: ignore[arg-type]
                padding=module.padding,  # type: ignore[arg-type]
                dilation=module.dilation,  # type: ignore[arg-type]
                groups=module.groups,
                bias=module.bias is not None,
            )
            _set_submodule(model, name, new)
        elif isinstance(module, nn.BatchNorm2d) and weight.shape[0] != module.num_features:
            _set_submodule(model, name, nn.BatchNorm2d(weight.shape[0], eps=module.eps))
        elif isinstance(module, nn.Linear) and weight.shape != module.weight.shape:
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
            _set_submodule(model, name, new)
    return model


def fx_int8(model: nn.Module, backend: str, example: torch.Tensor) -> Any:
    """FX graph-mode static quantization structure (observers in place, not yet calibrated)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = backend
        return prepare_fx(
            copy.deepcopy(model).eval(), get_default_qconfig_mapping(backend), (example,)
        )


def convert_int8(prepared: nn.Module) -> nn.Module:
    """Turn a calibrated FX-prepared model into its int8 form."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted: nn.Module = convert_fx(prepared)  # type: ignore[arg-type]
        return converted


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``torch.ao.quantization.quantize_dynamic`` on every nn.Linear."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(
            model, {nn.Linear}, dtype=torch.qint8
        )
        return quantized


def rebuild(manifest: Manifest, fmt: str, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Rebuild the module a torch artifact of format ``fmt`` was saved from, weights loaded."""
    model = build_architecture(manifest.architecture).eval()
    if fmt == "state_dict":
        model = resize_to_state_dict(model, state_dict)
    elif fmt == "fx-int8":
        details = manifest.artifact("torch").details
        size = manifest.preprocess.crop_size
        model = convert_int8(fx_int8(model, details["backend"], torch.zeros(1, 3, size, size)))
    elif fmt == "dynamic-int8":
        model = dynamic_int8(model)
    else:
        raise ValueError(f"unknown torch artifact format {fmt!r}")
    model.load_state_dict(state_dict)
    return model.eval()


def load_torch_model(manifest: Manifest, path: Path) -> nn.Module:
    """Load a variant's torch artifact safely (``weights_only=True``)."""
    with warnings.catch_warnings():
        # torch's own loader for quantized tensors still goes through TypedStorage.
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return rebuild(manifest, manifest.artifact("torch").format, state_dict)
