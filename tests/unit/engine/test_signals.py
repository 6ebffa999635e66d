"""worker.engine.signals and features: teacher outputs computed once, cached; captured layers."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.nets import build_model
from distill.spec import CNNConfig, MLPConfig, StoredModelConfig
from worker.engine.features import FeatureCapture, layer_names
from worker.engine.signals import TOPK, TeacherSignals, compute_signals

CPU = torch.device("cpu")


def mlp(inputs: int, classes: int, hidden: int = 16, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = StoredModelConfig(model=MLPConfig(hidden=[hidden]), input_shape=[inputs], num_classes=classes)
    return build_model(cfg)


def data(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def exact(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x))


def test_mixture_of_two_teachers_with_weights_3_to_1() -> None:
    x = data(10, 4)
    a, b = mlp(4, 3, seed=1), mlp(4, 3, seed=2)
    signals = compute_signals([a, b], [3.0, 1.0], x, CPU)
    assert signals.weights == [0.75, 0.25] and signals.top_k is None and signals.num_teachers == 2
    batch = signals.batch(torch.arange(10))
    za, zb = exact(a, x), exact(b, x)
    for t in (1.0, 4.0):
        mixture = 0.75 * F.softmax(za / t, dim=1) + 0.25 * F.softmax(zb / t, dim=1)
        torch.testing.assert_close(batch.probs(t), mixture)
    torch.testing.assert_close(batch.logits, 0.75 * za + 0.25 * zb)
    picked = signals.batch(torch.tensor([7, 2]))
    torch.testing.assert_close(picked.probs(2.0), batch.probs(2.0)[[7, 2]])


def test_each_teacher_runs_once_in_eval_mode_and_keeps_its_mode() -> None:
    teachers = [mlp(4, 3, seed=1), mlp(4, 3, seed=2)]
    calls: list[bool] = []
    for teacher in teachers:
        teacher.train()
        teacher.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    compute_signals(teachers, [1.0, 1.0], data(25, 4), CPU, batch_size=10)
    assert calls == [False] * 6  # 3 batches per teacher, each in eval mode
    assert all(t.training for t in teachers)


def test_bytes_round_trip_is_exact_and_says_what_it_holds() -> None:
    cnn = build_model(StoredModelConfig(model=CNNConfig(channels=[6]), input_shape=[8], num_classes=3))
    signals = compute_signals([cnn], [2.0], data(12, 8), CPU, capture=["3"])
    assert signals.feature_shapes == {"3": torch.Size([6, 4])}
    blob = signals.to_bytes()
    (size,) = struct.unpack("<Q", blob[:8])
    metadata = json.loads(blob[8 : 8 + size])["__metadata__"]
    assert metadata["storage"] == "logits" and json.loads(metadata["capture"]) == ["3"]
    again = TeacherSignals.from_bytes(blob)
    assert again.weights == [1.0] and again.capture == ["3"] and again.num_classes == 3
    assert again.logits is not None and signals.logits is not None
    assert torch.equal(again.logits, signals.logits)
    assert torch.equal(again.features["3"], signals.features["3"])
    with pytest.raises(ValueError):
        TeacherSignals.from_bytes(b"not safetensors at all")


def test_top_k_for_many_classes() -> None:
    x = data(20, 8)
    teacher = mlp(8, 200, hidden=32)
    signals = compute_signals([teacher], [1.0], x, CPU)
    assert signals.top_k == TOPK and signals.logits is None
    again = TeacherSignals.from_bytes(signals.to_bytes())
    assert again.top_k == TOPK and again.topk_indices is not None and again.topk_indices.dtype == torch.int64
    batch = again.batch(torch.arange(20))
    z = exact(teacher, x)
    top = z.topk(TOPK, dim=1).indices
    # At T = 1: the top-k probabilities and the tail mass are exact; the tail is spread uniformly.
    p1, true_p1 = batch.probs(1.0), F.softmax(z, dim=1)
    torch.testing.assert_close(p1.gather(1, top), true_p1.gather(1, top))
    tail = 1 - true_p1.gather(1, top).sum(1)
    others = p1.scatter(1, top, 0.0)
    torch.testing.assert_close(others.sum(1), tail)
    torch.testing.assert_close(others.max(1).values, tail / (200 - TOPK))
    # At any T: a distribution whose top-k part is the softmax of the stored logits at T.
    p4 = batch.probs(4.0)
    torch.testing.assert_close(p4.sum(1), torch.ones(20))
    top4 = p4.gather(1, top)
    torch.testing.assert_close(top4 / top4.sum(1, keepdim=True), F.softmax(z.gather(1, top) / 4.0, dim=1))
    # logits: stored values, the rest filled with each example's smallest stored value.
    logits = batch.logits
    torch.testing.assert_close(logits.gather(1, top), z.gather(1, top))
    assert torch.equal(logits.min(1).values, z.gather(1, top).min(1).values)
    # a forced small k, and a k as large as the class count stores full logits
    assert compute_signals([teacher], [1.0], x, CPU, top_k=5).top_k == 5
    assert compute_signals([teacher], [1.0], x, CPU, top_k=500).top_k is None


def test_top_k_mixture_stays_a_distribution() -> None:
    x = data(6, 8)
    signals = compute_signals([mlp(8, 150, seed=1), mlp(8, 150, seed=2)], [1.0, 3.0], x, CPU)
    probs = signals.batch(torch.arange(6)).probs(2.0)
    assert signals.top_k == TOPK and probs.shape == (6, 150) and (probs > 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(6))


def test_teacher_errors() -> None:
    x = data(4, 4)
    with pytest.raises(ValueError, match="teacher 1 predicts 5 classes but teacher 0 predicts 3"):
        compute_signals([mlp(4, 3), mlp(4, 5)], [1.0, 1.0], x, CPU)
    with pytest.raises(ValueError, match="single teacher"):
        compute_signals([mlp(4, 3), mlp(4, 3)], [1.0, 1.0], x, CPU, capture=["1"])
    with pytest.raises(ValueError, match="2 teacher"):
        compute_signals([mlp(4, 3), mlp(4, 3)], [1.0], x, CPU)
    with pytest.raises(ValueError, match=r"the teacher has no layer 'net\.1'; its layers are: '0', '1', '2'"):
        compute_signals([mlp(4, 3)], [1.0], x, CPU, capture=["net.1"])
    with pytest.raises(ValueError, match="exposes no attention maps"):
        compute_signals([mlp(4, 3)], [1.0], x, CPU, capture=["@attention"])


def test_layer_names_and_capture() -> None:
    model = mlp(4, 3)
    assert layer_names(model) == ["0", "1", "2", "3", "4"]  # Flatten, Linear, ReLU, Dropout, Linear
    capture = FeatureCapture(model, ["2"])
    with capture:
        out = model(torch.ones(2, 4))
    assert capture.outputs["2"].shape == (2, 16) and capture.outputs["2"].min() >= 0
    model(torch.ones(3, 4))  # hooks are gone after the block
    assert capture.outputs["2"].shape == (2, 16)
    assert out.shape == (2, 3) and math.isfinite(out.sum().item())


def test_precomputed_mixture_equals_the_per_batch_mixture():
    torch.manual_seed(0)
    logits = torch.randn(2, 50, 7)
    signals = TeacherSignals(num_classes=7, weights=[3.0, 1.0], logits=logits)
    idx = torch.tensor([4, 0, 49, 17])
    live = signals.batch(idx).probs(2.5)
    signals.precompute([2.5])
    ahead = signals.batch(idx)
    assert 2.5 in ahead.mixed
    torch.testing.assert_close(ahead.probs(2.5), live)
    expected = 0.75 * torch.softmax(logits[0, idx] / 2.5, -1) + 0.25 * torch.softmax(logits[1, idx] / 2.5, -1)
    torch.testing.assert_close(live, expected)
    # A training step that reads only the mixture does not copy the logits; one that needs them gets them.
    lean = signals.batch(idx, logits=False)
    assert lean.full_logits is None
    torch.testing.assert_close(lean.probs(2.5), live)
    torch.testing.assert_close(
        signals.batch(idx, logits=True).logits, 0.75 * logits[0, idx] + 0.25 * logits[1, idx]
    )
