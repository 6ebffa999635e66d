"""Helpers the engine's tests share (fixtures wrap them in conftest.py)."""

from __future__ import annotations

import numpy as np
import torch

from distill.datasets import ArrayDataset
from distill.spec import MLPConfig, StoredModelConfig
from worker.engine.distributed import DataParallel
from worker.engine.loop import NoCallbacks
from worker.engine.signals import TeacherSignals


def three_blobs(n: int, seed: int) -> ArrayDataset:
    """Three separable Gaussian blobs in 4-D, labels 0..2."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    x = centers[y] + 0.3 * rng.standard_normal((n, 4)).astype(np.float32)
    return ArrayDataset(x.astype(np.float32), y.astype(np.int64))


BLOBS_MLP = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[4], num_classes=3)
"""The data-parallel tests' student for :func:`three_blobs` (no dropout: each rank would draw its own masks,
so runs with dropout agree only in distribution)."""


def blobs_teacher_signals(n: int) -> TeacherSignals:
    """Seeded teacher logits for ``n`` examples of :func:`three_blobs` (one teacher, 3 classes)."""
    logits = 3 * torch.randn(1, n, 3, generator=torch.Generator().manual_seed(5))
    return TeacherSignals(num_classes=3, weights=[1.0], logits=logits)


class Recorder(NoCallbacks):
    """Training callbacks that record every step and epoch, and stop after ``stop_after`` steps."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, int, int]] = []
        self.epochs: list[dict[str, float]] = []
        self.rates: list[tuple[float, float | None]] = []
        """Per epoch: the learning rate and the throughput (examples per second) ``fit`` reported."""
        self.stop_after = stop_after

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        self.steps.append((epoch, epochs, step, steps))

    def on_epoch(
        self,
        *,
        epoch: int,
        epochs: int,
        step: int,
        steps: int,
        metrics: dict[str, float],
        learning_rate: float,
        throughput: float | None,
    ) -> None:
        self.epochs.append(metrics)
        self.rates.append((learning_rate, throughput))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def averaged_gradients(value: float, ranks: object) -> list[float]:
    """Rank ``r`` sets every gradient of a small module to ``value * (r + 1)`` and averages them over the
    ranks (the objective's own parameters, which DDP does not own); returns them flattened. Module-level,
    so the data-parallel tests can hand it to spawned ranks."""
    import torch

    from worker.engine.distributed import RankGroup

    assert isinstance(ranks, RankGroup)
    module = torch.nn.Linear(3, 2)
    for p in module.parameters():
        p.grad = torch.full_like(p, value * (ranks.rank + 1))
    ranks.average_gradients(module)
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]).tolist()


TWO_RANKS = DataParallel(world=2, backend="gloo", timeout_s=120, threads=1)
"""The data-parallel tests' layout: two gloo processes on the CPU, one torch thread per peer."""


def weights(model: torch.nn.Module) -> torch.Tensor:
    """Every parameter of ``model``, flattened into one tensor (to compare two trained copies)."""
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every dropout off: each rank draws its own masks, so runs with dropout agree with
    one process only in distribution."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model
