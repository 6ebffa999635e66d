"""Distillation losses (Hinton, Vinyals & Dean, 2015: "Distilling the Knowledge in a Neural Network")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinton_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    The ``T^2`` factor keeps the gradient's magnitude roughly independent of ``T`` (soft-target gradients
    scale as ``1 / T^2``), so ``alpha`` mixes KD and cross-entropy at a comparable scale for any ``T``.
    """
    t = temperature
    student_log_probs = F.log_softmax(student_logits.float() / t, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * (t * t)


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the examples where ``mask`` is true; 0 (with a gradient path) when none are."""
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    per_example = F.cross_entropy(logits.float(), safe_labels, reduction="none")
    weights = mask.to(per_example.dtype)
    return (per_example * weights).sum() / weights.sum().clamp(min=1.0)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    labeled_mask: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss and its parts (``loss``, ``ce_loss``, and ``kd_loss`` with a teacher).

    Without a teacher: cross-entropy over the labeled examples. With one:
    ``alpha * KD (all examples) + (1 - alpha) * CE (labeled examples; 0 when there are none)``.
    """
    ce = masked_cross_entropy(student_logits, labels, labeled_mask)
    if teacher_logits is None:
        value = float(ce.detach())
        return ce, {"loss": value, "ce_loss": value}
    kd = hinton_kd_loss(student_logits, teacher_logits, temperature)
    loss = alpha * kd + (1.0 - alpha) * ce
    values = torch.stack([loss, kd, ce]).detach().tolist()  # one device sync, not three
    return loss, dict(zip(("loss", "kd_loss", "ce_loss"), values, strict=True))
