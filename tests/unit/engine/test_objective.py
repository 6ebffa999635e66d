"""worker.engine.objective: the spec's weighted losses, their validation, and attention transfer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.nets import build_model
from distill.spec import DistillationSpec, MLPConfig, StoredModelConfig
from worker.engine.features import FeatureCapture
from worker.engine.losses import dkd_loss, kd_loss
from worker.engine.objective import Objective, build_objective, student_capture, teacher_capture
from worker.engine.signals import TeacherBatch, compute_signals

CPU = torch.device("cpu")


def spec(*losses: dict[str, object]) -> DistillationSpec:
    return DistillationSpec.model_validate({"losses": list(losses)} if losses else {})


def teacher_batch(logits: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> TeacherBatch:
    return TeacherBatch(
        num_classes=logits.shape[1], weights=torch.ones(1), full_logits=logits[None], features=features or {}
    )


MLP = build_model(StoredModelConfig(model=MLPConfig(hidden=[8]), input_shape=[4], num_classes=3))


def build(
    distillation: DistillationSpec,
    *,
    student: nn.Module = MLP,
    teacher_feature_shapes: dict[str, torch.Size] | None = None,
    has_teacher: bool = True,
    student_input: torch.Tensor | None = None,
) -> Objective:
    return build_objective(
        distillation,
        temperature=3.0,
        alpha=0.7,
        student=student,
        teacher_feature_shapes=teacher_feature_shapes or {},
        has_teacher=has_teacher,
        student_input=student_input,
    )


def test_default_is_alpha_kd_plus_one_minus_alpha_ce() -> None:
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 0])
    mask = torch.tensor([True, True, True, False, False])
    objective = build(spec())
    loss, values = objective(student, {}, labels, mask, teacher_batch(teacher))
    parts = objective.named(values)
    kd = kd_loss(student, F.softmax(teacher / 3.0, dim=1), 3.0)  # over all 5 examples
    ce = F.cross_entropy(student[:3], labels[:3])  # over the 3 labeled ones
    assert loss.item() == pytest.approx(0.7 * kd.item() + 0.3 * ce.item(), rel=1e-5)
    assert parts == pytest.approx({"loss": loss.item(), "kd_loss": kd.item(), "ce_loss": ce.item()}, rel=1e-5)


def test_no_mask_means_every_example_is_labeled() -> None:
    """The fast path (``labeled_mask=None``, a pool without a transfer set) gives what an all-true mask
    gives, for the default loss and for DKD (which decouples around the labels then)."""
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    labels, everyone = torch.tensor([0, 1, 2, 3, 1, 0]), torch.ones(6, dtype=torch.bool)
    for distillation in (spec(), spec({"type": "dkd", "weight": 1.0}, {"type": "ce", "weight": 0.5})):
        objective = build(distillation)
        fast, fast_values = objective(student, {}, labels, None, teacher_batch(teacher))
        masked, masked_values = objective(student, {}, labels, everyone, teacher_batch(teacher))
        assert fast.item() == pytest.approx(masked.item(), rel=1e-6)
        assert objective.named(fast_values) == pytest.approx(objective.named(masked_values), rel=1e-6)


def test_without_a_teacher_only_cross_entropy() -> None:
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    labels, mask = torch.tensor([0, 1, 2, 0]), torch.tensor([True, True, False, True])
    objective = build(spec(), has_teacher=False)
    loss, values = objective(logits, {}, labels, mask, None)
    parts = objective.named(values)
    assert set(parts) == {"loss", "ce_loss"}
    assert loss.item() == pytest.approx(F.cross_entropy(logits[mask], labels[mask]).item(), rel=1e-6)
    build(spec({"type": "ce"}), has_teacher=False)
    with pytest.raises(ValueError, match=r"losses\[1\]: the kd loss needs a teacher; without one only ce"):
        build(spec({"type": "ce"}, {"type": "kd"}), has_teacher=False)
    with pytest.raises(ValueError, match="no teacher signals"):
        build(spec())(logits, {}, labels, mask, None)


def test_weighted_sum_of_several_losses() -> None:
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels, mask = torch.tensor([2, 0, 0, 0]), torch.tensor([True, False, False, False])
    objective = build(
        spec(
            {"type": "kd", "weight": 0.5, "temperature": 2.0},
            {"type": "logit_mse", "weight": 0.1},
            {"type": "dkd", "weight": 2.0, "beta": 4.0},
            {"type": "kd", "weight": 1.0},
        )
    )
    loss, values = objective(student, {}, labels, mask, teacher_batch(teacher))
    parts = objective.named(values)
    kd2 = kd_loss(student, F.softmax(teacher / 2.0, dim=1), 2.0).item()
    kd3 = kd_loss(student, F.softmax(teacher / 3.0, dim=1), 3.0).item()
    mse = F.mse_loss(student, teacher).item()
    # DKD targets: the label where there is one, else the teacher's most likely class.
    target = torch.where(mask, labels, teacher.argmax(1))
    dkd = dkd_loss(student, F.softmax(teacher / 3.0, dim=1), target, 1.0, 4.0, 3.0).item()
    assert parts == pytest.approx(
        {"kd_loss": kd2, "logit_mse_loss": mse, "dkd_loss": dkd, "kd2_loss": kd3, "loss": loss.item()},
        rel=1e-5,
    )
    assert loss.item() == pytest.approx(0.5 * kd2 + 0.1 * mse + 2.0 * dkd + kd3, rel=1e-5)


def test_hint_validation_and_projection() -> None:
    hint = spec({"type": "hint", "student_layer": "2", "teacher_layer": "net.5"})
    assert student_capture(hint) == ["2"] and teacher_capture(hint) == ["net.5"]
    shapes = {"net.5": torch.Size([6, 2])}
    objective = build(hint, teacher_feature_shapes=shapes, student_input=torch.zeros(2, 4))
    params = list(objective.parameters())
    assert [p.shape for p in params] == [torch.Size([12, 8]), torch.Size([12])]  # Linear(8 -> 6 * 2)
    with pytest.raises(ValueError, match=r"the student has no layer 'net\.2'; its layers are: '0', '1'"):
        build(
            spec({"type": "hint", "student_layer": "net.2", "teacher_layer": "net.5"}),
            teacher_feature_shapes=shapes,
            student_input=torch.zeros(2, 4),
        )
    with pytest.raises(ValueError, match=r"losses\[0\]: the teacher layer 'net\.5' was not captured"):
        build(hint, student_input=torch.zeros(2, 4))


class Attention(nn.Module):
    """Single-block self-attention whose probabilities pass through the named module ``probs``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, s, d = h.shape
        q, k, v = (t.reshape(b, s, self.heads, -1).transpose(1, 2) for t in self.qkv(h).chunk(3, dim=-1))
        attn = self.probs(F.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1))
        return h + (attn @ v).transpose(1, 2).reshape(b, s, d)


class TinyTransformer(nn.Module):
    """Inputs ``[b, seq]`` (one number per position); exposes its attention maps."""

    def __init__(self, layers: int, heads: int, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(1, dim)
        self.blocks = nn.ModuleList(Attention(dim, heads) for _ in range(layers))
        self.head = nn.Linear(dim, classes)
        self.attention_layers = [f"blocks.{i}.probs" for i in range(layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.unsqueeze(-1))
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


def test_attention_needs_a_transformer_student() -> None:
    attention = spec({"type": "attention"})
    with pytest.raises(ValueError, match="attention loss needs a transformer student"):
        build(attention, teacher_feature_shapes={"@attention.0": torch.Size([1, 5, 5])})
    with pytest.raises(ValueError, match="needs a transformer teacher"):
        build(attention, student=TinyTransformer(2, 1))


def test_attention_transfer_from_a_deeper_teacher() -> None:
    torch.manual_seed(0)
    teacher, student = TinyTransformer(layers=4, heads=2), TinyTransformer(layers=2, heads=1)
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    distillation = spec({"type": "attention"}, {"type": "kd", "weight": 0.1})
    signals = compute_signals([teacher], [1.0], x, CPU, capture=teacher_capture(distillation))
    assert signals.feature_shapes == {f"@attention.{i}": torch.Size([1, 5, 5]) for i in range(4)}
    objective = build_objective(
        distillation,
        temperature=2.0,
        alpha=0.5,
        student=student,
        teacher_feature_shapes=signals.feature_shapes,
        student_input=torch.from_numpy(x[:2]),
    )
    assert objective.terms[0].layer_map == [(0, 1), (1, 3)]
    bad = spec({"type": "attention", "layer_map": [[0, 4]]})
    with pytest.raises(ValueError, match=r"layer_map: pair \[0, 4\] is out of range"):
        build(bad, student=student, teacher_feature_shapes=signals.feature_shapes)

    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    capture = FeatureCapture(student, objective.student_layers, role="student")
    batch, idx = signals.batch(torch.arange(16)), torch.arange(16)
    no_labels = torch.zeros(16, dtype=torch.bool)
    history = []
    for _ in range(30):
        with capture:
            logits = student(torch.from_numpy(x)[idx])
        assert capture.outputs["@attention.1"].shape == (16, 1, 5, 5)
        loss, values = objective(logits, capture.outputs, torch.zeros(16, dtype=torch.long), no_labels, batch)
        parts = objective.named(values)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(parts["attention_loss"])
    assert history[-1] < 0.5 * history[0]
