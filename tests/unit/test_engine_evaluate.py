"""worker.engine.evaluate: predictions, metrics and CPU speed."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from distill.datasets import ArrayDataset
from distill.spec import MLPConfig, StoredModelConfig
from worker.engine.evaluate import accuracy, agreement, cpu_inference_speed, predict_logits, summarize
from worker.engine.models import build_model, count_parameters

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded; several threads thrash on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CFG = StoredModelConfig(model=MLPConfig(hidden=[8], dropout=0.5), input_shape=[2, 3], num_classes=4)


def test_predict_logits_batches_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = build_model(CFG)
    model.train()
    x = np.random.default_rng(0).standard_normal((10, 2, 3)).astype(np.float32)
    logits = predict_logits(model, x, CPU, batch_size=3)
    assert logits.shape == (10, 4) and logits.dtype == torch.float32 and logits.device.type == "cpu"
    assert model.training  # restored
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(torch.from_numpy(x)))


def test_accuracy_and_agreement() -> None:
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    assert accuracy(logits, np.array([0, 1, 1, 1])) == pytest.approx(0.75)
    assert accuracy(logits, torch.tensor([1, 0, 1, 0])) == pytest.approx(0.0)
    other = torch.tensor([[0.0, 1.0], [0.0, 1.0], [5.0, 1.0], [1.0, 0.0]])
    assert agreement(logits, other) == pytest.approx(0.5)


def test_cpu_inference_speed() -> None:
    speed = cpu_inference_speed(build_model(CFG), [2, 3], repeats=5)
    assert set(speed) == {"latency_ms_batch1", "throughput_batch64"}
    assert speed["latency_ms_batch1"] > 0 and speed["throughput_batch64"] > 0


def test_summarize_with_and_without_teacher() -> None:
    rng = np.random.default_rng(1)
    val = ArrayDataset(rng.standard_normal((20, 2, 3)).astype(np.float32), rng.integers(0, 4, 20))
    student = build_model(CFG)
    teacher = build_model(StoredModelConfig(model=MLPConfig(hidden=[32]), input_shape=[2, 3], num_classes=4))
    plain = summarize(student, val, CPU)
    assert set(plain) == {"test_accuracy", "parameters", "cpu_latency_ms", "cpu_throughput"}
    assert plain["parameters"] == count_parameters(student)
    full = summarize(student, val, CPU, teacher=teacher)
    assert set(full) == set(plain) | {
        "teacher_test_accuracy",
        "teacher_parameters",
        "agreement_with_teacher",
        "teacher_cpu_latency_ms",
        "teacher_cpu_throughput",
    }
    assert full["teacher_parameters"] == count_parameters(teacher)
    assert 0.0 <= full["agreement_with_teacher"] <= 1.0
    with pytest.raises(ValueError, match="labeled"):
        summarize(student, ArrayDataset(val.x), CPU)
