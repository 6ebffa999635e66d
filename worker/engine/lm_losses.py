"""Token-level distillation losses for causal language models, as pure functions.

Modelled on TRL's ``generalized_jsd_loss`` (GKD, Agarwal et al. 2024): at a temperature ``T`` the student's
and the teacher's next-token distributions are compared at every *completion* position (prompt tokens and
padding are masked out), and the per-token divergences are **summed and divided by ``num_tokens``**, the
token count of the whole (accumulated) batch the optimizer step covers. So a batch split into micro-batches
whose losses are added gives exactly the loss, and the gradient, of the one big batch (see
``Loop.weight`` in :mod:`worker.engine.loop`).

* :func:`forward_kl`: ``KL(teacher || student)`` (mass-covering; what Hinton's KD minimises per token);
* :func:`reverse_kl`: ``KL(student || teacher)`` (mode-seeking);
* :func:`generalized_jsd`: ``beta * KL(teacher || M) + (1 - beta) * KL(student || M)`` with
  ``M = beta * teacher + (1 - beta) * student``; ``beta = 0`` is forward KL and ``beta = 1`` reverse KL (as
  in TRL); near those limits it tends to ``beta`` times forward KL and ``1 - beta`` times reverse KL.
* :func:`next_token_ce`: cross-entropy with the completion's next tokens (supervised fine-tuning).

The teacher is either its full logits (``[batch, positions, vocab]``) or a :class:`TopK` (its top-k
log-probabilities at ``T = 1``, their token ids and the tail mass, as the teacher-output cache keeps them).
With a top-k teacher both distributions are compared over ``k + 1`` buckets: the k tokens, and "any other
token", whose teacher mass is the tail and whose student mass is everything the student gives outside the k
tokens. At ``T != 1`` the teacher's tail is taken as spread evenly over the other ``vocab - k`` tokens at
``T = 1`` before the temperature is applied (so the tail bucket is exact at ``T = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
TAIL_FLOOR = 1e-8
"""The smallest tail mass used (a zero tail would make reverse KL infinite)."""


@dataclass
class TopK:
    """A teacher's top-k next-token distribution at ``T = 1`` per position: ``logprobs`` and ``ids``
    ``[..., k]``, ``tail`` ``[...]`` (the probability of every other token), over ``vocab_size`` tokens."""

    logprobs: torch.Tensor
    ids: torch.Tensor
    tail: torch.Tensor
    vocab_size: int


def top_k(logits: torch.Tensor, k: int) -> TopK:
    """The top-k view of full logits (at ``T = 1``): what the teacher-output cache stores."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = logprobs.topk(k, dim=-1)
    tail = (1.0 - values.exp().sum(-1)).clamp(min=0.0)
    return TopK(values, ids, tail, logits.shape[-1])


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``sum p (log p - log q)`` over the last dim; terms where ``p == 0`` count 0 (and give no NaN
    gradient: the logs are replaced before they meet)."""
    p = log_p.exp()
    live = p > 0
    zero = torch.zeros_like(p)
    return (p * (torch.where(live, log_p, zero) - torch.where(live, log_q, zero))).sum(-1)


def _divergence(student_log: Tensor, teacher_log: Tensor, kind: Divergence, beta: float) -> Tensor:
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(teacher_log, student_log)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(student_log, teacher_log)
    mixture = torch.logsumexp(
        torch.stack([student_log + math.log(1.0 - beta), teacher_log + math.log(beta)]), dim=0
    )
    return beta * _kl(teacher_log, mixture) + (1.0 - beta) * _kl(student_log, mixture)


def bucket_log_probs(
    student_logits: Tensor, teacher: Tensor | TopK, temperature: float
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities at ``temperature`` over the same support: the vocabulary (full
    teacher logits) or the k + 1 buckets of a :class:`TopK` teacher (see the module doc)."""
    student_log = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    if not isinstance(teacher, TopK):
        return student_log, torch.log_softmax(teacher.float() / temperature, dim=-1)
    ids = teacher.ids.long()
    student_top = student_log.gather(-1, ids)
    student_rest = student_log.scatter(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    rest_count = teacher.vocab_size - ids.shape[-1]
    top = teacher.logprobs.float()
    if rest_count <= 0:  # every token is kept: no tail on either side
        student_rest = torch.full_like(student_rest, float("-inf"))
        joined = torch.cat([top / temperature, torch.full_like(student_rest, float("-inf"))], dim=-1)
        return torch.cat([student_top, student_rest], dim=-1), joined - joined.logsumexp(-1, keepdim=True)
    tail = teacher.tail.float().clamp(min=TAIL_FLOOR, max=1.0)
    if temperature != 1.0:
        each_tail = (torch.log(tail) - math.log(rest_count)).unsqueeze(-1)
        joined = torch.cat([top, each_tail], dim=-1) / temperature
        joined[..., -1] += math.log(rest_count)
        teacher_log = joined - joined.logsumexp(-1, keepdim=True)
    else:
        # the stored top-k log-probabilities, renormalised with the tail so the buckets sum to one
        joined = torch.cat([top, torch.log(tail).unsqueeze(-1)], dim=-1)
        teacher_log = joined - joined.logsumexp(-1, keepdim=True)
    return torch.cat([student_top, student_rest], dim=-1), teacher_log


def token_divergence(
    student_logits: Tensor,
    teacher: Tensor | TopK,
    mask: Tensor,
    *,
    kind: Divergence,
    beta: float = 0.5,
    temperature: float = 1.0,
    num_tokens: float | None = None,
) -> Tensor:
    """The divergence ``kind`` summed over the positions where ``mask`` is true, divided by ``num_tokens``
    (default: the mask's count). ``student_logits`` ``[..., vocab]``; ``teacher`` full logits of the same
    shape or a :class:`TopK` over the same positions; ``mask`` ``[...]``."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], not {beta}")
    student_log, teacher_log = bucket_log_probs(student_logits, teacher, temperature)
    per_token = _divergence(student_log, teacher_log, kind, beta)
    return _masked_sum(per_token, mask) / _count(mask, num_tokens)


def forward_kl(
    student_logits: Tensor,
    teacher: Tensor | TopK,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    num_tokens: float | None = None,
) -> Tensor:
    """``KL(teacher_T || student_T)`` per masked token, summed, over ``num_tokens``."""
    return token_divergence(
        student_logits, teacher, mask, kind="forward_kl", temperature=temperature, num_tokens=num_tokens
    )


def reverse_kl(
    student_logits: Tensor,
    teacher: Tensor | TopK,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    num_tokens: float | None = None,
) -> Tensor:
    """``KL(student_T || teacher_T)`` per masked token, summed, over ``num_tokens``."""
    return token_divergence(
        student_logits, teacher, mask, kind="reverse_kl", temperature=temperature, num_tokens=num_tokens
    )


def generalized_jsd(
    student_logits: Tensor,
    teacher: Tensor | TopK,
    mask: Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    num_tokens: float | None = None,
) -> Tensor:
    """GKD's generalised JSD (see the module doc) per masked token, summed, over ``num_tokens``."""
    return token_divergence(
        student_logits, teacher, mask, kind="jsd", beta=beta, temperature=temperature, num_tokens=num_tokens
    )


def next_token_ce(
    student_logits: Tensor, targets: Tensor, mask: Tensor, *, num_tokens: float | None = None
) -> Tensor:
    """Cross-entropy of ``targets`` (the next tokens) at the masked positions, summed, over ``num_tokens``."""
    flat = F.cross_entropy(
        student_logits.float().reshape(-1, student_logits.shape[-1]),
        torch.where(mask, targets, torch.zeros_like(targets)).reshape(-1),
        reduction="none",
    ).reshape(mask.shape)
    return _masked_sum(flat, mask) / _count(mask, num_tokens)


def _masked_sum(per_token: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum()


def _count(mask: Tensor, num_tokens: float | None) -> float | Tensor:
    if num_tokens is not None:
        return max(float(num_tokens), 1.0)
    return mask.sum().clamp(min=1).float()


LM_LOSSES: dict[str, Callable[..., Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
    "ce": next_token_ce,
}
"""The ``distillation.losses`` types of ``causal_lm`` jobs and their functions."""
