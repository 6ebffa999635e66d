"""Token-level losses of causal_lm jobs: each divergence against its definition, GKD's beta limits, the
top-k + tail teacher, prompt masking, normalisation by the global token count, and gradient accumulation
through ``fit`` giving the one-big-batch gradient."""

from __future__ import annotations

import math

import pytest
import torch

from worker.engine.lm_losses import (
    LM_LOSSES,
    forward_kl,
    generalized_jsd,
    next_token_ce,
    reverse_kl,
    top_k,
)
from worker.engine.loop import Loop, fit


def _logits(seed: int, shape: tuple[int, ...] = (2, 5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def test_forward_and_reverse_kl_match_their_definitions_at_a_temperature() -> None:
    s, t = _logits(0), _logits(1)
    mask = torch.ones(2, 5, dtype=torch.bool)
    ps, pt = torch.softmax(s / 2, -1), torch.softmax(t / 2, -1)
    assert forward_kl(s, t, mask, temperature=2).item() == pytest.approx(_kl(pt, ps).mean().item(), rel=1e-5)
    assert reverse_kl(s, t, mask, temperature=2).item() == pytest.approx(_kl(ps, pt).mean().item(), rel=1e-5)


def test_jsd_is_the_mixture_divergence_and_tends_to_forward_and_reverse_kl() -> None:
    s, t = _logits(2), _logits(3)
    mask = torch.ones(2, 5, dtype=torch.bool)
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    beta = 0.3
    m = beta * pt + (1 - beta) * ps
    expected = (beta * _kl(pt, m) + (1 - beta) * _kl(ps, m)).mean()
    assert generalized_jsd(s, t, mask, beta=beta).item() == pytest.approx(expected.item(), rel=1e-5)
    # the limits: beta 0 and 1 are exactly forward and reverse KL; near them, the same up to the scale beta
    assert generalized_jsd(s, t, mask, beta=0.0).item() == pytest.approx(forward_kl(s, t, mask).item())
    assert generalized_jsd(s, t, mask, beta=1.0).item() == pytest.approx(reverse_kl(s, t, mask).item())
    eps = 1e-4
    near_forward = generalized_jsd(s.double(), t.double(), mask, beta=eps).item() / eps
    near_reverse = generalized_jsd(s.double(), t.double(), mask, beta=1 - eps).item() / eps
    assert near_forward == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-2)
    assert near_reverse == pytest.approx(reverse_kl(s, t, mask).item(), rel=1e-2)


def test_prompt_and_padding_positions_are_masked_out() -> None:
    s, t = _logits(4), _logits(5)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, 2:] = True
    mask[1, 4] = True
    targets = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(0))
    changed_s, changed_t = s.clone(), t.clone()
    changed_s[~mask] = 100.0  # whatever happens at masked positions does not count
    changed_t[~mask] = -100.0
    for name, fn in LM_LOSSES.items():
        if name == "ce":
            a, b = fn(s, targets, mask), fn(changed_s, targets, mask)
        else:
            a, b = fn(s, t, mask), fn(changed_s, changed_t, mask)
        assert a.item() == pytest.approx(b.item(), rel=1e-6), name
        assert math.isfinite(a.item())


def test_losses_are_sums_over_tokens_divided_by_the_given_token_count() -> None:
    s, t = _logits(6), _logits(7)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mean = forward_kl(s, t, mask)
    assert forward_kl(s, t, mask, num_tokens=20).item() == pytest.approx(mean.item() * 10 / 20, rel=1e-6)
    targets = torch.zeros(2, 5, dtype=torch.long)
    per_token = torch.nn.functional.cross_entropy(s.reshape(-1, 11), targets.reshape(-1))
    assert next_token_ce(s, targets, mask).item() == pytest.approx(per_token.item(), rel=1e-6)


def test_a_top_k_teacher_with_every_token_is_the_full_teacher_and_small_k_stays_close() -> None:
    s, t = _logits(8, (3, 4, 50)), _logits(9, (3, 4, 50)) * 3
    mask = torch.ones(3, 4, dtype=torch.bool)
    full = top_k(t, 50)
    for fn in (forward_kl, reverse_kl):
        assert fn(s, full, mask).item() == pytest.approx(fn(s, t, mask).item(), rel=1e-4)
    # k < vocab: the tail bucket carries the teacher's remaining mass; finite, and gradients flow
    s.requires_grad_(True)
    small = generalized_jsd(s, top_k(t, 8), mask, beta=0.5, temperature=2.0)
    small.backward()
    assert math.isfinite(small.item()) and s.grad is not None and torch.isfinite(s.grad).all()
    # at T = 1 the bucketed forward KL is at most the full one (coarsening never increases a KL)
    assert forward_kl(s.detach(), top_k(t, 8), mask).item() <= forward_kl(s.detach(), t, mask).item() + 1e-6


class _TinyLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(13, 8)
        self.head = torch.nn.Linear(8, 13)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(ids)))


def test_gradient_accumulation_through_fit_equals_one_big_batch() -> None:
    """Examples with very different completion lengths: 4 micro-batches accumulated give the same step as
    one batch of all of them, because the loss is normalised by the group's token count (Loop.weight)."""
    gen = torch.Generator().manual_seed(0)
    n, length = 8, 6
    ids = torch.randint(0, 13, (n, length), generator=gen)
    mask = torch.zeros(n, length - 1, dtype=torch.bool)
    for i in range(n):
        mask[i, length - 1 - (1 + i % 5) :] = True  # 1 to 5 completion tokens
    teacher = torch.randn(n, length - 1, 13, generator=gen)

    big = _trained(ids, mask, teacher, batch_size=8, accumulate=1)
    accumulated = _trained(ids, mask, teacher, batch_size=2, accumulate=4)
    for key in big:
        torch.testing.assert_close(accumulated[key], big[key], rtol=1e-5, atol=1e-6)
    # without the token weighting (each micro-batch's mean counted alike) the step differs
    plain = _trained(ids, mask, teacher, batch_size=2, accumulate=4, token_weighted=False)
    assert any(not torch.allclose(plain[k], big[k], atol=1e-6) for k in big)


def _trained(
    ids: torch.Tensor,
    mask: torch.Tensor,
    teacher: torch.Tensor,
    *,
    batch_size: int,
    accumulate: int,
    token_weighted: bool = True,
) -> dict[str, torch.Tensor]:
    """A fresh tiny LM's weights after one epoch of forward KL + CE through ``fit``; ``token_weighted``:
    micro-batches weighted by their completion tokens (``Loop.weight``), else each counted alike."""
    model = _TinyLM()

    def step(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(ids[idx])[:, :-1]
        loss = forward_kl(logits, teacher[idx], mask[idx]) + next_token_ce(logits, ids[idx][:, 1:], mask[idx])
        return loss, loss.detach().reshape(1)

    loop = Loop(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        step=step,
        keys=["loss"],
        evaluate=dict,
        examples=len(ids),
        epochs=1,
        batch_size=batch_size,
        seed=0,
        learning_rate=0.5,
        accumulate=accumulate,
        weight=(lambda idx: float(mask[idx].sum())) if token_weighted else None,
    )
    fit(loop)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
