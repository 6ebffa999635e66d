"""Distillation losses as pure functions, and the registry that names them (:data:`LOSSES`).

Every function returns a scalar averaged over the batch ("batchmean" for the KL-based ones). Teacher
targets for the KL losses are given as probabilities at the loss's temperature, so a mixture of several
teachers, or a top-k approximation from a cache, is just another distribution (see
:mod:`worker.engine.signals`). :mod:`worker.engine.objective` combines them with the spec's weights.

References: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network"; Romero et al.
(2015), "FitNets: Hints for Thin Deep Nets"; Zhao et al. (2022), "Decoupled Knowledge Distillation";
Wang et al. (2020), "MiniLM", and Jiao et al. (2020), "TinyBERT" (attention transfer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _kl_rows(target_probs: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row, given ``p`` and ``log q``; rows where ``p`` is 0 contribute 0 (not NaN)."""
    return (torch.xlogy(target_probs, target_probs) - target_probs * log_q).sum(dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss ``T^2 * KL(teacher_T || softmax(student / T))``, averaged over the batch.

    ``teacher_probs`` ``[b, classes]`` is the teacher's distribution at temperature ``T`` already (e.g.
    ``softmax(teacher_logits / T)``, a mixture of teachers, or a top-k approximation). The ``T^2``
    factor keeps the gradient's magnitude roughly independent of ``T`` (soft-target gradients scale as
    ``1 / T^2``), so the KD and cross-entropy weights mix at a comparable scale for any ``T``.
    """
    t = temperature
    p = teacher_probs.float()
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    # KL(p || q) summed over the batch as one dot product <p, log p - log q>: few small ops per training
    # step (their fixed cost shows on CPU), and no cancellation between two large sums. Where p is 0 its
    # log is clamped to a finite number, so those classes contribute exactly 0.
    b = max(1, p.numel() // p.shape[-1])
    log_p = torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))
    return torch.dot(p.reshape(-1), (log_p - log_q).reshape(-1)) * (t * t / b)


def hinton_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """:func:`kd_loss` with the teacher given as logits."""
    return kd_loss(student_logits, F.softmax(teacher_logits.float() / temperature, dim=-1), temperature)


def logit_mse_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the logits, averaged over examples and classes."""
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def dkd_terms(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example ``(TCKD, NCKD)`` of Decoupled KD, both scaled by ``T^2`` (shape ``[b]`` each).

    * TCKD: ``KL`` between the binary distributions ``[p_target, 1 - p_target]`` of teacher and student.
    * NCKD: ``KL`` between the distributions over the non-target classes, each renormalised to sum to 1
      (0 when the teacher puts all its mass on the target).

    They decompose KD exactly (Zhao et al., 2022, eq. 4): ``KD = TCKD + (1 - p_target^teacher) * NCKD``.
    """
    t = temperature
    z = student_logits.float() / t
    p = teacher_probs.float()
    target = target.long().unsqueeze(1)
    is_target = torch.zeros_like(z, dtype=torch.bool).scatter_(1, target, True)

    # Student, in log space for stability: log p_t, log(1 - p_t) and the renormalised non-target part.
    log_all = torch.logsumexp(z, dim=1)
    z_other = z.masked_fill(is_target, float("-inf"))
    log_other = torch.logsumexp(z_other, dim=1)
    log_s_target = z.gather(1, target).squeeze(1) - log_all
    log_s_binary = torch.stack([log_s_target, log_other - log_all], dim=1)
    log_s_hat = torch.where(is_target, torch.zeros_like(z), z_other - log_other.unsqueeze(1))

    # Teacher: its binary distribution and its renormalised non-target part.
    p_target = p.gather(1, target).squeeze(1)
    p_other_classes = p.masked_fill(is_target, 0.0)
    p_other = p_other_classes.sum(dim=1)
    p_binary = torch.stack([p_target, p_other], dim=1)
    p_hat = p_other_classes / p_other.clamp(min=1e-12).unsqueeze(1)

    tckd = _kl_rows(p_binary, log_s_binary) * (t * t)
    nckd = _kl_rows(p_hat, log_s_hat) * (t * t)
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., 2022): ``alpha * TCKD + beta * NCKD``, averaged over the batch.

    ``teacher_probs`` is the teacher's distribution at ``temperature``; ``target`` ``[b]`` the class
    each example is decoupled around: its label, or for unlabeled examples the teacher's argmax (the
    caller chooses; see :mod:`worker.engine.objective`). See :func:`dkd_terms`.
    """
    tckd, nckd = dkd_terms(student_logits, teacher_probs, target, temperature)
    return (alpha * tckd + beta * nckd).mean()


def hint_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, projection: nn.Module) -> torch.Tensor:
    """FitNets' hint loss: ``MSE(projection(student_feat), teacher_feat)``, averaged over all elements.

    Both sides are compared flattened per example, so the projection decides how shapes are matched:
    :func:`hint_projection` builds a 1x1 convolution for conv maps of the same spatial size, a linear
    map of the flattened features otherwise, and nothing (identity) when the shapes already agree.
    """
    projected = projection(student_feat.float()).flatten(1)
    target = teacher_feat.float().flatten(1)
    if projected.shape != target.shape:
        raise ValueError(
            f"hint: the projected student features have shape {list(projected.shape)} "
            f"but the teacher's have {list(target.shape)}"
        )
    return F.mse_loss(projected, target)


MAX_PROJECTION_PARAMETERS = 1 << 24
"""A hint projection larger than this (16.8 M parameters) is refused: pick layers closer in size."""


def hint_projection(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The learned map from a student layer's output to a teacher layer's, per example shapes (no batch).

    * same shape: ``nn.Identity()`` (the student layer is asked to match the teacher's directly);
    * conv maps ``[channels, *spatial]`` with the same spatial size (1-D or 2-D): a 1x1 convolution
      from the student's channels to the teacher's (FitNets' convolutional regressor, kernel 1);
    * anything else (e.g. an MLP layer to a CNN layer): flatten, then ``nn.Linear``.
    """
    s, t = list(student_shape), list(teacher_shape)
    if s == t:
        return nn.Identity()
    if len(s) == len(t) and len(s) in (2, 3) and s[1:] == t[1:]:
        conv = nn.Conv1d if len(s) == 2 else nn.Conv2d
        return conv(s[0], t[0], kernel_size=1)
    n_in, n_out = _numel(s), _numel(t)
    if (n_in + 1) * n_out > MAX_PROJECTION_PARAMETERS:
        raise ValueError(
            f"hint: projecting a student layer of shape {s} onto a teacher layer of shape {t} needs a "
            f"{n_in}x{n_out} linear map, over the limit of {MAX_PROJECTION_PARAMETERS} parameters; "
            "choose layers with fewer features (e.g. after pooling)"
        )
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_out))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer ``i`` to teacher layer ``ceil((i + 1) * T / S) - 1``: evenly spaced, last to last
    (TinyBERT's uniform mapping). Needs at least one layer on each side."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("attention: both models need at least one attention layer")
    return [(i, -(-(i + 1) * teacher_layers // student_layers) - 1) for i in range(student_layers)]


def attention_loss(
    student_attn: Sequence[torch.Tensor],
    teacher_attn: Sequence[torch.Tensor],
    layer_map: Sequence[tuple[int, int]] | None = None,
    *,
    mode: Literal["mse", "kl"] = "mse",
) -> torch.Tensor:
    """Attention transfer between attention maps ``[b, heads, queries, keys]`` (one per layer).

    Maps are averaged over heads first (so student and teacher may have different head counts), then
    compared for each ``(student layer, teacher layer)`` pair of ``layer_map`` (default:
    :func:`default_layer_map`), and the pairs averaged. ``mode="mse"``: mean squared error;
    ``mode="kl"``: ``KL(teacher row || student row)`` per query (rows are distributions over keys),
    averaged over examples and queries. Padding is not masked: every query and key counts.
    """
    if layer_map is None:
        layer_map = default_layer_map(len(student_attn), len(teacher_attn))
    if not layer_map:
        raise ValueError("attention: the layer map is empty")
    terms = []
    for i, j in layer_map:
        if not (0 <= i < len(student_attn) and 0 <= j < len(teacher_attn)):
            raise ValueError(
                f"attention: layer pair ({i}, {j}) is out of range: the student has {len(student_attn)} "
                f"attention layers and the teacher {len(teacher_attn)}"
            )
        s = student_attn[i].float().mean(dim=1)
        t = teacher_attn[j].float().mean(dim=1)
        if s.shape != t.shape:
            raise ValueError(
                f"attention: student layer {i} has maps of shape {list(s.shape)} (after averaging heads) "
                f"but teacher layer {j} has {list(t.shape)}"
            )
        if mode == "mse":
            terms.append(F.mse_loss(s, t))
        else:
            terms.append(_kl_rows(t, torch.log(s.clamp(min=1e-12))).mean())
    return torch.stack(terms).mean()


def masked_attention_loss(
    student_attn: Sequence[torch.Tensor],
    teacher_attn: Sequence[torch.Tensor],
    layer_map: Sequence[tuple[int, int]],
    mask: torch.Tensor,
) -> torch.Tensor:
    """:func:`attention_loss` (MSE) over real tokens only: ``mask`` ``[b, P]`` marks them. Padded queries
    and keys are zeroed on both sides and the mean is taken over the real ``(query, key)`` pairs only, so
    padding neither trains nor dilutes the loss (teacher maps are expected zero-padded to ``P``)."""
    valid = (mask[:, :, None] * mask[:, None, :]).unsqueeze(1).float()  # [b, 1, P, P]
    student = [s.float() * valid for s in student_attn]
    teacher = [t.float() * valid for t in teacher_attn]
    mse = attention_loss(student, teacher, layer_map, mode="mse")
    return mse * (valid.numel() / valid.sum().clamp(min=1.0))


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Mean cross-entropy over the examples where ``mask`` is true; 0 (with a gradient path) when none are.
    ``mask=None``: every example is labeled (plain cross-entropy, the fast path)."""
    if mask is None:
        return F.cross_entropy(logits.float(), labels)
    safe_labels = torch.where(mask, labels, torch.zeros_like(labels))
    per_example = F.cross_entropy(logits.float(), safe_labels, reduction="none")
    weights = mask.to(per_example.dtype)
    return (per_example * weights).sum() / weights.sum().clamp(min=1.0)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "kd": kd_loss,
    "logit_mse": logit_mse_loss,
    "dkd": dkd_loss,
    "hint": hint_loss,
    "attention": attention_loss,
    "ce": masked_cross_entropy,
}
"""Every loss a spec may name (``distillation.losses[].type``) and the function that computes it."""
