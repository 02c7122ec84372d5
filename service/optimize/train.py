"""The one training loop: baseline training, pruning fine-tune and distillation share it.

With a ``teacher`` it minimises Hinton et al.'s distillation loss
``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
(the T^2 keeps the soft term's gradients on the same scale as the hard term's).
Early stopping watches accuracy on a validation split carved from the training data; the
held-out test split is never seen here.

The loop runs channels-last (oneDNN's fast layout for convolutions on CPU: about 1.3x per
training step for DenseNet-121 at 32x32, batch 128, on the project's machine) and, as training
images are not augmented, computes the teacher's logits once per image rather than once per
epoch. Neither changes what the loop computes beyond floating-point rounding.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from service.optimize.evaluate import model_logits, topk_accuracy

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of one run of the loop."""

    epochs: int = 30
    lr: float = 2e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 6
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.7
    min_delta: float = 1e-4
    desc: str = "train"

    def as_dict(self, distilling: bool) -> dict[str, float | int | str]:
        """Settings worth recording in a manifest."""
        out: dict[str, float | int | str] = {
            "epochs_max": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "seed": self.seed,
            "optimizer": "AdamW",
            "schedule": "cosine",
        }
        if distilling:
            out.update(temperature=self.temperature, alpha=self.alpha)
        return out


@dataclass
class FitResult:
    """What the loop did."""

    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        """What a manifest records about the run."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_seconds": round(self.seconds, 1),
            "best_val_accuracy": self.best_val_accuracy,
        }


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU determinism for the digits builds)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def collect_tensors(dataset: Dataset[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of a dataset as two stacked tensors, in dataset order."""
    images, labels = [], []
    for batch, targets in DataLoader(dataset, batch_size=256):
        images.append(batch)
        labels.append(targets)
    return torch.cat(images), torch.cat(labels)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, t: float, alpha: float
) -> torch.Tensor:
    """Hinton loss; soft term scaled by T^2."""
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student, targets)
    return alpha * (t * t) * soft + (1.0 - alpha) * hard


def fit(
    model: nn.Module,
    train: Dataset[Any],
    val: Dataset[Any],
    config: TrainConfig,
    teacher: nn.Module | None = None,
) -> FitResult:
    """Train ``model`` in place; on return it holds the weights of its best validation epoch."""
    seed_everything(config.seed)
    if teacher is not None:  # one teacher pass: (image, label, teacher logits) per sample
        teacher_logits, _ = model_logits(teacher, train)
        images_all, labels_all = collect_tensors(train)
        train = TensorDataset(images_all, labels_all, teacher_logits)
    loader = DataLoader(
        train,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(train) > config.batch_size,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(config.seed),
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * len(loader)
    )
    model.to(memory_format=torch.channels_last)
    best_acc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=config.desc, unit="epoch", dynamic_ncols=True)
    epoch = 0
    for epoch in bar:
        model.train()
        total, seen = 0.0, 0
        for images, targets, *taught in loader:
            logits = model(images.contiguous(memory_format=torch.channels_last))
            if not taught:
                loss = F.cross_entropy(logits, targets)
            else:
                loss = distillation_loss(
                    logits, taught[0], targets, config.temperature, config.alpha
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(targets)
            seen += len(targets)
        val_logits, val_labels = model_logits(model, val)
        val_acc = topk_accuracy(val_logits, val_labels, 1)
        history.append({"epoch": epoch, "loss": total / max(seen, 1), "val_accuracy": val_acc})
        bar.set_postfix(loss=f"{total / max(seen, 1):.4f}", val_acc=f"{val_acc:.4f}")
        if val_acc > best_acc + config.min_delta:
            best_acc, best_epoch, best_state = val_acc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            log.info("%s: early stop at epoch %d (best %d)", config.desc, epoch, best_epoch)
            break
    bar.close()
    model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_acc, best_epoch, epoch, time.perf_counter() - start, history)
