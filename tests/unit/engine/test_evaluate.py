"""worker.engine.evaluate: predictions, metrics (calibration included), size on disk and CPU speed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from distill.datasets import ArrayDataset
from distill.nets import build_model, count_parameters
from distill.spec import MLPConfig, StoredModelConfig
from worker.engine.evaluate import (
    accuracy,
    agreement,
    bytes_on_disk,
    cpu_inference_speed,
    expected_calibration_error,
    predict_logits,
    summarize,
)
from worker.engine.export import model_to_safetensors

CPU = torch.device("cpu")


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


def _logits_for(confidences: list[float], predicted: list[int], classes: int = 2) -> torch.Tensor:
    """Logits whose softmax puts ``confidence`` on ``predicted`` and shares the rest evenly."""
    rows = []
    for conf, cls in zip(confidences, predicted, strict=True):
        probs = torch.full((classes,), (1.0 - conf) / (classes - 1), dtype=torch.float64)
        probs[cls] = conf
        rows.append(probs.log())
    return torch.stack(rows)


def test_expected_calibration_error_hand_computed() -> None:
    # four predictions of class 0 at 90 % confidence, three right: bin (13/15, 14/15], |0.75 - 0.9| = 0.15
    # two predictions of class 1 at 70 % confidence, both right: bin (10/15, 11/15], |1.0 - 0.7| = 0.3
    # ECE = 4/6 * 0.15 + 2/6 * 0.3 = 0.2
    logits = _logits_for([0.9, 0.9, 0.9, 0.9, 0.7, 0.7], [0, 0, 0, 0, 1, 1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.2)
    # one bin: accuracy 5/6, mean confidence (4 * 0.9 + 2 * 0.7) / 6 = 5/6, so perfectly calibrated
    assert expected_calibration_error(logits, torch.from_numpy(labels), bins=1) == pytest.approx(
        0.0, abs=1e-12
    )
    # always right at 60 % (three classes): under-confident by 0.4
    assert expected_calibration_error(_logits_for([0.6] * 3, [2, 0, 1], 3), [2, 0, 1]) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(logits, labels, bins=0)
    with pytest.raises(ValueError, match="logits"):
        expected_calibration_error(logits, labels[:3])


def test_expected_calibration_error_matches_a_loop_over_bins() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=gen) * 3
    labels = torch.randint(0, 7, (500,), generator=gen)
    probs = logits.double().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    expected = 0.0
    for lo, hi in itertools.pairwise(edges):  # Guo et al.'s reference formulation
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = (pred[in_bin] == labels[in_bin]).double().mean() - conf[in_bin].mean()
            expected += in_bin.double().mean().item() * abs(gap.item())
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-9)


def test_bytes_on_disk() -> None:
    model = build_model(CFG)
    assert bytes_on_disk(model, CFG) == len(model_to_safetensors(model, CFG))
    assert 4 * count_parameters(model) < bytes_on_disk(model) < bytes_on_disk(model, CFG)


def test_summarize_with_and_without_teacher() -> None:
    rng = np.random.default_rng(1)
    val = ArrayDataset(rng.standard_normal((20, 2, 3)).astype(np.float32), rng.integers(0, 4, 20))
    student = build_model(CFG)
    teacher_cfg = StoredModelConfig(model=MLPConfig(hidden=[32]), input_shape=[2, 3], num_classes=4)
    teacher = build_model(teacher_cfg)
    plain = summarize(student, val, CPU)
    assert set(plain) == {
        "test_accuracy",
        "ece",
        "parameters",
        "bytes_on_disk",
        "cpu_latency_ms",
        "cpu_throughput",
    }
    assert plain["parameters"] == count_parameters(student)
    assert 0.0 <= plain["ece"] <= 1.0 and plain["bytes_on_disk"] == bytes_on_disk(student)
    full = summarize(student, val, CPU, teacher=teacher, cfg=CFG, teacher_cfg=teacher_cfg)
    assert set(full) == set(plain) | {
        "teacher_test_accuracy",
        "teacher_ece",
        "teacher_parameters",
        "teacher_bytes_on_disk",
        "agreement_with_teacher",
        "teacher_cpu_latency_ms",
        "teacher_cpu_throughput",
        "compression_ratio",
        "speedup",
    }
    assert full["teacher_parameters"] == count_parameters(teacher)
    assert full["bytes_on_disk"] == len(model_to_safetensors(student, CFG))
    assert full["teacher_bytes_on_disk"] == len(model_to_safetensors(teacher, teacher_cfg))
    assert 0.0 <= full["agreement_with_teacher"] <= 1.0
    assert full["compression_ratio"] == pytest.approx(count_parameters(teacher) / count_parameters(student))
    assert full["speedup"] == pytest.approx(full["teacher_cpu_latency_ms"] / full["cpu_latency_ms"])
    with pytest.raises(ValueError, match="labeled"):
        summarize(student, ArrayDataset(val.x), CPU)
