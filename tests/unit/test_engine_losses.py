"""worker.engine.losses: Hinton KD and the mixed distillation loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from worker.engine.losses import distillation_loss, hinton_kd_loss


def test_kl_with_itself_is_zero() -> None:
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    for t in (0.5, 1.0, 4.0):
        assert hinton_kd_loss(logits, logits.clone(), t).item() == pytest.approx(0.0, abs=1e-6)


def test_hand_computed_value() -> None:
    # teacher softmax([ln 3, 0]) = [0.75, 0.25]; student softmax([0, 0]) = [0.5, 0.5]
    # KL = 0.75 ln(1.5) + 0.25 ln(0.5) = 0.130812; the second row (identical) adds 0; batchmean halves it.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert hinton_kd_loss(student, teacher, 1.0).item() == pytest.approx(kl / 2, rel=1e-5)
    # At T=2 the teacher logits [2 ln 3, 0] give the same soft targets; T^2 = 4 scales the loss.
    teacher2 = torch.tensor([[2 * math.log(3.0), 0.0], [2.0, 4.0]])
    student2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    assert hinton_kd_loss(student2, teacher2, 2.0).item() == pytest.approx(4 * kl / 2, rel=1e-5)


def _grad_norm(student: torch.Tensor, teacher: torch.Tensor, t: float, scale: bool) -> float:
    s = student.clone().requires_grad_(True)
    loss = hinton_kd_loss(s, teacher, t)
    if not scale:
        loss = loss / (t * t)
    loss.backward()
    assert s.grad is not None
    return s.grad.norm().item()


def test_t_squared_keeps_gradient_magnitude_steady() -> None:
    gen = torch.Generator().manual_seed(0)
    student = 0.5 * torch.randn(16, 10, generator=gen)
    teacher = 0.5 * torch.randn(16, 10, generator=gen)
    ratio = _grad_norm(student, teacher, 2.0, scale=True) / _grad_norm(student, teacher, 8.0, scale=True)
    assert 0.8 < ratio < 1.25
    # Without the T^2 factor the gradient would shrink ~16x from T=2 to T=8.
    unscaled = _grad_norm(student, teacher, 2.0, scale=False) / _grad_norm(student, teacher, 8.0, scale=False)
    assert unscaled > 10


def test_without_teacher_is_cross_entropy_over_labeled() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    mask = torch.tensor([True, True, False, True, False, True])
    loss, parts = distillation_loss(logits, None, labels, mask, alpha=0.9, temperature=4.0)
    expected = F.cross_entropy(logits[mask], labels[mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"loss", "ce_loss"} and parts["loss"] == pytest.approx(expected.item(), rel=1e-6)


def test_with_teacher_mixes_kd_and_ce() -> None:
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    labels = torch.tensor([0, 1, 2, 0, 0])
    mask = torch.tensor([True, True, True, False, False])
    loss, parts = distillation_loss(student, teacher, labels, mask, alpha=0.7, temperature=3.0)
    kd = hinton_kd_loss(student, teacher, 3.0)  # over all 5 examples
    ce = F.cross_entropy(student[:3], labels[:3])  # over the 3 labeled ones
    assert loss.item() == pytest.approx(0.7 * kd.item() + 0.3 * ce.item(), rel=1e-5)
    assert parts["kd_loss"] == pytest.approx(kd.item(), rel=1e-5)
    assert parts["ce_loss"] == pytest.approx(ce.item(), rel=1e-5)


def test_no_labeled_examples_gives_kd_only_and_finite_grads() -> None:
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(4, 3, generator=gen).requires_grad_(True)
    teacher = torch.randn(4, 3, generator=gen)
    labels = torch.full((4,), 7)  # garbage labels on unlabeled examples must not matter
    mask = torch.zeros(4, dtype=torch.bool)
    loss, parts = distillation_loss(student, teacher, labels, mask, alpha=0.5, temperature=2.0)
    assert parts["ce_loss"] == 0.0
    assert loss.item() == pytest.approx(0.5 * hinton_kd_loss(student, teacher, 2.0).item(), rel=1e-5)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
