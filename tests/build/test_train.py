"""The shared training loop: seeded determinism, early stopping, the distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import Subset

from service.modeling import build_architecture
from service.optimize.data import digits_task
from service.optimize.train import TrainConfig, distillation_loss, fit, seed_everything

TINY = {
    "name": "densenet",
    "growth_rate": 4,
    "block_config": [1, 1],
    "num_init_features": 8,
    "num_classes": 10,
}


def small_task():
    task = digits_task(image_size=16, seed=0)
    return Subset(task.train, range(128)), Subset(task.val, range(32))


def train_once(seed: int) -> dict[str, torch.Tensor]:
    train, val = small_task()
    seed_everything(seed)
    model = build_architecture(TINY)
    fit(model, train, val, TrainConfig(epochs=2, seed=seed, batch_size=32, desc="test"))
    return model.state_dict()


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = train_once(0), train_once(0), train_once(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_early_stopping_returns_the_best_epochs_weights():
    from service.optimize.evaluate import model_logits, topk_accuracy

    train, val = small_task()
    seed_everything(0)
    model = build_architecture(TINY)
    result = fit(model, train, val, TrainConfig(epochs=8, patience=1, seed=0, lr=3e-2))
    assert len(result.history) == result.epochs_run
    assert result.epochs_run == 8 or result.epochs_run - result.best_epoch == 1
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)
    logits, labels = model_logits(model, val)
    assert topk_accuracy(logits, labels, 1) == result.best_val_accuracy


def test_distillation_loss_terms():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    targets = torch.randint(0, 10, (8,))
    hard = F.cross_entropy(student, targets)
    assert torch.allclose(distillation_loss(student, teacher, targets, 4.0, 0.0), hard)
    soft = F.kl_div(F.log_softmax(student / 4, 1), F.softmax(teacher / 4, 1), reduction="batchmean")
    assert torch.allclose(distillation_loss(student, teacher, targets, 4.0, 1.0), 16 * soft)
    assert distillation_loss(teacher, teacher, targets, 4.0, 1.0).abs() < 1e-6
