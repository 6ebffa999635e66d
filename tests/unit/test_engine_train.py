"""worker.engine.train: the training loop (tiny synthetic data, CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from distill.datasets import ArrayDataset
from distill.spec import DistillationSpec, MLPConfig, StoredModelConfig, TrainingSpec
from worker.engine.evaluate import accuracy, predict_logits
from worker.engine.models import build_model
from worker.engine.train import NoCallbacks, TrainInputs, train_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; several threads thrash on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CFG = StoredModelConfig(model=MLPConfig(hidden=[16]), input_shape=[4], num_classes=3)


def blobs(n: int, seed: int) -> ArrayDataset:
    """Three separable Gaussian blobs in 4-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    x = centers[y] + 0.3 * rng.standard_normal((n, 4)).astype(np.float32)
    return ArrayDataset(x.astype(np.float32), y.astype(np.int64))


class Recorder(NoCallbacks):
    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, int, int]] = []
        self.epochs: list[dict[str, float]] = []
        self.stop_after = stop_after

    def on_step(self, *, epoch: int, epochs: int, step: int, steps: int) -> None:
        self.steps.append((epoch, epochs, step, steps))

    def on_epoch(self, *, epoch: int, epochs: int, step: int, steps: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


def run(
    training: TrainingSpec,
    teacher: torch.nn.Module | None = None,
    transfer: ArrayDataset | None = None,
    callbacks: Recorder | None = None,
    cfg: StoredModelConfig = CFG,
) -> tuple[torch.nn.Module, bool, list[dict[str, float]], Recorder]:
    rec = callbacks or Recorder()
    inputs = TrainInputs(train=blobs(100, 0), validation=blobs(50, 1), transfer=transfer)
    out = train_model(cfg, inputs, training, DistillationSpec(), teacher, CPU, rec)
    return out.model, out.stopped, out.history, rec


def test_learns_and_reports_progress() -> None:
    model, stopped, history, rec = run(TrainingSpec(epochs=3, batch_size=32, learning_rate=0.05))
    assert not stopped and len(history) == 3
    assert [s[2] for s in rec.steps] == list(range(1, 13))  # 4 steps/epoch, counted over all epochs
    assert {s[3] for s in rec.steps} == {12} and {s[1] for s in rec.steps} == {3}
    assert rec.steps[4][0] == 2
    assert set(rec.epochs[0]) == {"train_loss", "val_accuracy", "val_loss"}
    assert history[-1]["epoch"] == 3.0 and history[-1]["val_accuracy"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert not model.training


def test_same_seed_same_student() -> None:
    training = TrainingSpec(epochs=2, batch_size=16, seed=7)
    a, *_ = run(training)
    b, *_ = run(training)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c, *_ = run(TrainingSpec(epochs=2, batch_size=16, seed=8))
    assert not torch.equal(sa["1.weight"], c.state_dict()["1.weight"])


def test_should_stop_returns_at_once() -> None:
    _, stopped, history, rec = run(TrainingSpec(epochs=5, batch_size=10), callbacks=Recorder(stop_after=3))
    assert stopped and len(rec.steps) == 3 and history == []


def test_distillation_with_transfer_set() -> None:
    teacher, *_ = run(TrainingSpec(epochs=3, batch_size=32, learning_rate=0.05))
    transfer = ArrayDataset(blobs(60, 2).x, None)
    small = StoredModelConfig(model=MLPConfig(hidden=[8]), input_shape=[4], num_classes=3)
    student, stopped, history, rec = run(
        TrainingSpec(epochs=15, batch_size=32, learning_rate=0.05),
        teacher=teacher,
        transfer=transfer,
        cfg=small,
    )
    assert not stopped
    assert rec.steps[-1][3] == 15 * 5  # pool = 100 train + 60 transfer = 160 -> 5 steps per epoch
    assert {"train_loss", "kd_loss", "ce_loss", "val_accuracy", "val_loss"} <= set(history[-1])
    val = blobs(50, 1)
    assert accuracy(predict_logits(student, val.x, CPU), val.y) > 0.9  # type: ignore[arg-type]
    assert teacher.training is False


def test_input_errors() -> None:
    training = TrainingSpec(epochs=1)
    with pytest.raises(ValueError, match="only used with a teacher"):
        run(training, transfer=blobs(5, 3))
    wrong = StoredModelConfig(model=MLPConfig(), input_shape=[5], num_classes=3)
    with pytest.raises(ValueError, match=r"shape \[4\] but the model expects \[5\]"):
        run(training, cfg=wrong)
    two = StoredModelConfig(model=MLPConfig(), input_shape=[4], num_classes=2)
    with pytest.raises(ValueError, match="2 classes"):
        run(training, cfg=two)
    unlabeled = TrainInputs(train=ArrayDataset(blobs(5, 0).x), validation=blobs(5, 1))
    with pytest.raises(ValueError, match="no labels"):
        train_model(CFG, unlabeled, training, DistillationSpec(), None, CPU, NoCallbacks())
    teacher = build_model(StoredModelConfig(model=MLPConfig(), input_shape=[4], num_classes=5))
    with pytest.raises(ValueError, match="teacher predicts 5 classes"):
        run(training, teacher=teacher)
