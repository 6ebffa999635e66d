"""The training loop: plain supervised training, or knowledge distillation from a teacher.

With a teacher, its logits are computed once, before the loop, for every example of the pool: the labeled
train set plus the (unlabeled) transfer set. Each step then mixes KD over the whole batch with cross-entropy
over the batch's labeled examples (see :func:`worker.engine.losses.distillation_loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.datasets import ArrayDataset
from distill.spec import DistillationSpec, StoredModelConfig, TrainingSpec
from worker.engine.evaluate import autocast, predict_logits
from worker.engine.losses import distillation_loss
from worker.engine.models import build_model


@dataclass
class TrainInputs:
    train: ArrayDataset
    """Labeled."""
    validation: ArrayDataset
    """Labeled; evaluated after each epoch."""
    transfer: ArrayDataset | None = None
    """Extra inputs without labels (any ``y`` is ignored); only used with a teacher."""


class TrainCallbacks(Protocol):
    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        """After each optimizer step; ``step`` counts from 1 to ``steps`` over all epochs."""

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        """After each epoch: ``train_loss``, ``val_accuracy``, ``val_loss`` (+ ``kd_loss``, ``ce_loss``)."""

    def should_stop(self) -> bool:
        """Polled before each step; true stops training at once (e.g. the job was cancelled)."""


class NoCallbacks:
    """Callbacks that do nothing and never stop."""

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        pass

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class TrainOutcome:
    model: nn.Module
    stopped: bool
    history: list[dict[str, float]] = field(default_factory=list)
    """One entry per finished epoch: ``epoch`` and the epoch's metrics."""


def train_model(
    cfg: StoredModelConfig,
    inputs: TrainInputs,
    training: TrainingSpec,
    distillation: DistillationSpec,
    teacher: nn.Module | None,
    device: torch.device,
    callbacks: TrainCallbacks,
) -> TrainOutcome:
    """Train a student of architecture ``cfg``; on CPU the same inputs and seed give the same weights."""
    _check_inputs(cfg, inputs, teacher)
    torch.manual_seed(training.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )

    # The pool of training examples: labeled train, plus unlabeled transfer inputs when there is a teacher.
    assert inputs.train.y is not None  # checked above
    x_parts, y_parts, mask_parts = (
        [inputs.train.x],
        [inputs.train.y],
        [np.ones(len(inputs.train), dtype=bool)],
    )
    if teacher is not None and inputs.transfer is not None:
        n_transfer = len(inputs.transfer)
        x_parts.append(inputs.transfer.x)
        y_parts.append(np.zeros(n_transfer, dtype=np.int64))
        mask_parts.append(np.zeros(n_transfer, dtype=bool))
    x_np = np.concatenate(x_parts).astype(np.float32, copy=False)
    x = torch.from_numpy(x_np)
    y = torch.from_numpy(np.concatenate(y_parts))
    labeled = torch.from_numpy(np.concatenate(mask_parts))
    teacher_logits = None
    if teacher is not None:
        teacher_logits = predict_logits(teacher, x_np, device)  # once, in eval mode, no grad
        if teacher_logits.shape[1] != cfg.num_classes:
            raise ValueError(
                f"the teacher predicts {teacher_logits.shape[1]} classes "
                f"but the student has {cfg.num_classes}"
            )

    n = len(x)
    steps_per_epoch = math.ceil(n / training.batch_size)
    epochs, steps = training.epochs, training.epochs * steps_per_epoch
    shuffle = torch.Generator().manual_seed(training.seed)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        totals: dict[str, float] = {}
        for start in range(0, n, training.batch_size):
            if callbacks.should_stop():
                model.eval()
                return TrainOutcome(model=model, stopped=True, history=history)
            idx = order[start : start + training.batch_size]
            xb = x[idx].to(device, non_blocking=True)
            yb = y[idx].to(device, non_blocking=True)
            mb = labeled[idx].to(device, non_blocking=True)
            tb = None if teacher_logits is None else teacher_logits[idx].to(device, non_blocking=True)
            with autocast(device):
                logits = model(xb)
            loss, parts = distillation_loss(
                logits.float(), tb, yb, mb, alpha=distillation.alpha, temperature=distillation.temperature
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value * len(idx)
            callbacks.on_step(epoch=epoch, epochs=epochs, step=step, steps=steps)

        metrics = {"train_loss": totals.pop("loss") / n}
        if teacher_logits is not None:
            metrics |= {key: total / n for key, total in totals.items()}
        metrics |= _validate(model, inputs.validation, device)
        history.append({"epoch": float(epoch), **metrics})
        callbacks.on_epoch(epoch=epoch, epochs=epochs, step=step, steps=steps, metrics=metrics)

    model.eval()
    return TrainOutcome(model=model, stopped=False, history=history)


def _validate(model: nn.Module, validation: ArrayDataset, device: torch.device) -> dict[str, float]:
    assert validation.y is not None
    logits = predict_logits(model, validation.x, device)
    labels = torch.from_numpy(validation.y)
    return {
        "val_accuracy": (logits.argmax(dim=1) == labels).float().mean().item(),
        "val_loss": F.cross_entropy(logits, labels).item(),
    }


def _check_inputs(cfg: StoredModelConfig, inputs: TrainInputs, teacher: nn.Module | None) -> None:
    """Raise ``ValueError`` with a clear message for inputs that do not fit the model or each other."""
    named = [("train", inputs.train), ("validation", inputs.validation)]
    if inputs.transfer is not None:
        if teacher is None:
            raise ValueError("a transfer set is only used with a teacher")
        named.append(("transfer", inputs.transfer))
    for name, ds in named:
        if len(ds) == 0:
            raise ValueError(f"the {name} set is empty")
        if ds.input_shape != list(cfg.input_shape):
            raise ValueError(
                f"the {name} set's examples have shape {ds.input_shape} "
                f"but the model expects {cfg.input_shape}"
            )
        if name == "transfer":
            continue
        if ds.y is None:
            raise ValueError(f"the {name} set has no labels; it needs a label for every example")
        if len(ds.y) != len(ds):
            raise ValueError(f"the {name} set has {len(ds)} examples but {len(ds.y)} labels")
        if int(ds.y.min()) < 0 or int(ds.y.max()) >= cfg.num_classes:
            raise ValueError(
                f"the {name} set has labels in [{int(ds.y.min())}, {int(ds.y.max())}] but the model has "
                f"{cfg.num_classes} classes (labels 0 to {cfg.num_classes - 1})"
            )
