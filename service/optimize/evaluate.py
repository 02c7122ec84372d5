"""Measurements every build records: accuracy, agreement, parameters, MACs, file size."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode


def collect_logits(
    predict: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset[Any],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``predict`` over a dataset; returns (logits, labels)."""
    outs, labels = [], []
    with torch.inference_mode():
        for images, targets in DataLoader(dataset, batch_size=batch_size):
            outs.append(predict(images).float())
            labels.append(targets)
    return torch.cat(outs), torch.cat(labels)


def model_logits(model: nn.Module, dataset: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode logits of a torch module over a dataset."""
    model.eval()
    return collect_logits(model, dataset)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose label is among the k highest logits."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of samples on which two models' top-1 classes agree."""
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def quality(
    logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor | None
) -> dict[str, float | None]:
    """Top-1/top-5 accuracy and top-1 agreement with a reference model's logits."""
    return {
        "accuracy_top1": round(topk_accuracy(logits, labels, 1), 6),
        "accuracy_top5": round(topk_accuracy(logits, labels, 5), 6),
        "agreement_top1_vs_baseline": round(agreement(logits, reference), 6)
        if reference is not None
        else None,
    }


def count_params(model: nn.Module) -> int:
    """Number of parameters (fp32 structure)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one forward pass at ``image_size`` (FLOPs / 2, batch 1)."""
    counter = FlopCounterMode(display=False)
    with warnings.catch_warnings(), torch.inference_mode(), counter:
        warnings.simplefilter("ignore")
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    return int(counter.get_total_flops() // 2)
