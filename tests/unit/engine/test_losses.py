"""worker.engine.losses: each loss against a hand-computed value and a textbook identity."""

from __future__ import annotations

import math
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.spec import LossSpec
from worker.engine.losses import (
    LOSSES,
    MAX_PROJECTION_PARAMETERS,
    attention_loss,
    default_layer_map,
    dkd_loss,
    dkd_terms,
    hint_loss,
    hint_projection,
    hinton_kd_loss,
    kd_loss,
    logit_mse_loss,
    masked_cross_entropy,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- KD -----------------------------------------------------------------------------------------------------


def test_kl_with_itself_is_zero() -> None:
    logits = torch.randn(8, 5, generator=gen(0))
    big = 10 * torch.randn(4096, 100, generator=gen(1))  # sums over many rows must not cancel badly
    for t in (0.5, 1.0, 4.0):
        assert abs(hinton_kd_loss(big, big.clone(), t).item()) < 1e-7
        assert hinton_kd_loss(logits, logits.clone(), t).item() == pytest.approx(0.0, abs=1e-6)
        assert kd_loss(logits, F.softmax(logits / t, dim=1), t).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_hand_computed_value() -> None:
    # teacher softmax([ln 3, 0]) = [0.75, 0.25]; student softmax([0, 0]) = [0.5, 0.5]
    # KL = 0.75 ln(1.5) + 0.25 ln(0.5) = 0.130812; the second row (identical) adds 0; batchmean halves it.
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert hinton_kd_loss(student, teacher, 1.0).item() == pytest.approx(kl / 2, rel=1e-5)
    probs = torch.tensor([[0.75, 0.25], F.softmax(torch.tensor([1.0, 2.0]), 0).tolist()])
    assert kd_loss(student, probs, 1.0).item() == pytest.approx(kl / 2, rel=1e-5)
    # At T=2 the teacher logits [2 ln 3, 0] give the same soft targets; T^2 = 4 scales the loss.
    teacher2 = torch.tensor([[2 * math.log(3.0), 0.0], [2.0, 4.0]])
    student2 = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    assert hinton_kd_loss(student2, teacher2, 2.0).item() == pytest.approx(4 * kl / 2, rel=1e-5)


def test_kd_handles_zero_teacher_probabilities() -> None:
    student = torch.zeros(1, 3, requires_grad=True)
    loss = kd_loss(student, torch.tensor([[1.0, 0.0, 0.0]]), 1.0)
    assert loss.item() == pytest.approx(math.log(3.0), rel=1e-6)  # KL(onehot || uniform) = ln 3
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def _grad_norm(student: torch.Tensor, teacher: torch.Tensor, t: float, scale: bool) -> float:
    s = student.clone().requires_grad_(True)
    loss = kd_loss(s, F.softmax(teacher / t, dim=1), t)
    if not scale:
        loss = loss / (t * t)
    loss.backward()
    assert s.grad is not None
    return s.grad.norm().item()


def test_t_squared_keeps_gradient_magnitude_steady() -> None:
    g = gen(0)
    student, teacher = 0.5 * torch.randn(16, 10, generator=g), 0.5 * torch.randn(16, 10, generator=g)
    ratio = _grad_norm(student, teacher, 2.0, scale=True) / _grad_norm(student, teacher, 8.0, scale=True)
    assert 0.8 < ratio < 1.25
    # Without the T^2 factor the gradient would shrink ~16x from T=2 to T=8.
    unscaled = _grad_norm(student, teacher, 2.0, scale=False) / _grad_norm(student, teacher, 8.0, scale=False)
    assert unscaled > 10


# -- logit MSE ----------------------------------------------------------------------------------------------


def test_logit_mse() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    assert logit_mse_loss(student, teacher).item() == pytest.approx((4 + 9) / 4)
    assert logit_mse_loss(teacher, teacher).item() == 0.0


# -- DKD ----------------------------------------------------------------------------------------------------


def test_dkd_hand_computed_value() -> None:
    # Student uniform over 3 classes; teacher [0.5, 0.3, 0.2]; target class 0; T = 1.
    # TCKD = KL([.5, .5] || [1/3, 2/3]); NCKD = KL([.6, .4] || [.5, .5]).
    tckd = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    nckd = 0.6 * math.log(1.2) + 0.4 * math.log(0.8)
    student, teacher, target = torch.zeros(1, 3), torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([0])
    got_t, got_n = dkd_terms(student, teacher, target, 1.0)
    assert got_t.item() == pytest.approx(tckd, rel=1e-5) and got_n.item() == pytest.approx(nckd, rel=1e-5)
    value = dkd_loss(student, teacher, target, alpha=1.0, beta=8.0, temperature=1.0)
    assert value.item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)
    # T^2 scaling, with the teacher given at T.
    at_t2 = dkd_loss(student, teacher, target, alpha=1.0, beta=8.0, temperature=2.0)
    assert at_t2.item() == pytest.approx(4 * (tckd + 8 * nckd), rel=1e-5)


def test_kd_decomposes_into_tckd_and_nckd() -> None:
    """Zhao et al. (2022), eq. 4: ``KD = TCKD + (1 - p_target^teacher) * NCKD``, per example, at any T."""
    g = gen(1)
    student, teacher_logits = torch.randn(6, 7, generator=g), 2 * torch.randn(6, 7, generator=g)
    target = torch.tensor([0, 3, 6, 2, 2, 5])
    for t in (1.0, 4.0):
        probs = F.softmax(teacher_logits / t, dim=1)
        tckd, nckd = dkd_terms(student, probs, target, t)
        p_target = probs.gather(1, target[:, None]).squeeze(1)
        for i in range(6):
            kd_i = kd_loss(student[i : i + 1], probs[i : i + 1], t).item()
            assert tckd[i].item() + (1 - p_target[i].item()) * nckd[i].item() == pytest.approx(kd_i, rel=1e-4)
            # the same through dkd_loss: alpha = 1 and beta = 1 - p_target weigh the two terms back into KD
            dkd = dkd_loss(
                student[i : i + 1], probs[i : i + 1], target[i : i + 1], 1.0, 1 - p_target[i].item(), t
            )
            assert dkd.item() == pytest.approx(kd_i, rel=1e-4)


def test_dkd_is_finite_for_a_certain_teacher_and_zero_for_itself() -> None:
    student = torch.randn(3, 4, generator=gen(2)).requires_grad_(True)
    certain = F.one_hot(torch.tensor([1, 2, 3]), 4).float()
    loss = dkd_loss(student, certain, torch.tensor([1, 2, 3]), 1.0, 8.0, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and student.grad is not None and torch.isfinite(student.grad).all()
    same = dkd_loss(student, F.softmax(student / 3.0, dim=1), torch.tensor([0, 1, 2]), 1.0, 8.0, 3.0)
    assert same.item() == pytest.approx(0.0, abs=1e-5)


# -- hint ---------------------------------------------------------------------------------------------------


def test_hint_hand_computed_value_and_identity() -> None:
    student = torch.tensor([[1.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0]])
    projection = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))  # -> [1, 2, 3]
    assert hint_loss(student, teacher, projection).item() == pytest.approx((1 + 4 + 4) / 3)
    maps = torch.randn(2, 3, 5, generator=gen(3))
    assert hint_loss(maps, maps.clone(), nn.Identity()).item() == 0.0


def test_hint_projections() -> None:
    assert isinstance(hint_projection([16], [16]), nn.Identity)
    conv = hint_projection([4, 10], [8, 10])  # conv maps, same length: 1x1 conv
    assert isinstance(conv, nn.Conv1d) and conv.kernel_size == (1,) and conv.out_channels == 8
    assert isinstance(hint_projection([4, 6, 6], [8, 6, 6]), nn.Conv2d)
    mixed = hint_projection([16], [6, 2])  # MLP layer -> CNN layer: flatten + linear to 12
    out = mixed(torch.randn(5, 16))
    assert out.shape == (5, 12)
    assert hint_loss(torch.randn(5, 16), torch.randn(5, 6, 2), mixed).ndim == 0
    with pytest.raises(ValueError, match="over the limit"):
        hint_projection([MAX_PROJECTION_PARAMETERS], [2])


def test_hint_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="projected student features"):
        hint_loss(torch.randn(2, 3), torch.randn(2, 4), nn.Identity())


# -- attention ----------------------------------------------------------------------------------------------


def attention_maps(b: int, heads: int, q: int, seed: int) -> torch.Tensor:
    return F.softmax(torch.randn(b, heads, q, q, generator=gen(seed)), dim=-1)


def test_attention_hand_computed_value() -> None:
    # Heads [[1, 0], [0, 1]] and [[0, 1], [0, 1]] average to [[.5, .5], [0, 1]]; against the identity:
    # squared errors .25 + .25 + 0 + 0 -> mean 0.125.
    student = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    teacher = torch.eye(2).reshape(1, 1, 2, 2)
    assert attention_loss([student], [teacher]).item() == pytest.approx(0.125)
    # KL mode, first query row: KL([1, 0] || [.5, .5]) = ln 2; second row 0; averaged over queries.
    assert attention_loss([student], [teacher], mode="kl").item() == pytest.approx(math.log(2) / 2, rel=1e-5)


def test_attention_identities() -> None:
    maps = [attention_maps(2, 4, 5, seed) for seed in range(3)]
    assert attention_loss(maps, [m.clone() for m in maps]).item() == 0.0
    assert attention_loss(maps, maps, mode="kl").item() == pytest.approx(0.0, abs=1e-6)
    # Only the head average matters: permuting heads, or giving the teacher its mean as one head, is free.
    teacher = [attention_maps(2, 3, 5, 10 + i) for i in range(3)]
    permuted = [m[:, torch.tensor([2, 0, 3, 1])] for m in maps]
    assert attention_loss(permuted, teacher).item() == pytest.approx(attention_loss(maps, teacher).item())
    averaged = [m.mean(dim=1, keepdim=True) for m in teacher]
    assert attention_loss(maps, averaged).item() == pytest.approx(attention_loss(maps, teacher).item())


def test_attention_layer_maps() -> None:
    assert default_layer_map(2, 4) == [(0, 1), (1, 3)]
    assert default_layer_map(3, 12) == [(0, 3), (1, 7), (2, 11)]
    assert default_layer_map(3, 3) == [(0, 0), (1, 1), (2, 2)]
    assert default_layer_map(4, 2) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    student = [attention_maps(2, 1, 3, 0), attention_maps(2, 1, 3, 1)]
    teacher = [attention_maps(2, 2, 3, 2 + i) for i in range(4)]
    default = attention_loss(student, teacher)
    explicit = (
        F.mse_loss(student[0][:, 0], teacher[1].mean(1)) + F.mse_loss(student[1][:, 0], teacher[3].mean(1))
    ) / 2
    assert default.item() == pytest.approx(explicit.item(), rel=1e-6)
    assert attention_loss(student, teacher, [(1, 0)]).item() == pytest.approx(
        F.mse_loss(student[1].mean(1), teacher[0].mean(1)).item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="out of range"):
        attention_loss(student, teacher, [(2, 0)])
    with pytest.raises(ValueError, match="shape"):
        attention_loss(student, [attention_maps(2, 1, 4, 9)])


# -- cross-entropy and the registry -------------------------------------------------------------------------


def test_masked_cross_entropy() -> None:
    logits = torch.randn(6, 4, generator=gen(1), requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 7, 1])  # the unlabeled example's 7 must not matter
    mask = torch.tensor([True, True, False, True, False, True])
    expected = F.cross_entropy(logits[mask], labels[mask])
    assert masked_cross_entropy(logits, labels, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    none = masked_cross_entropy(logits, labels, torch.zeros(6, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None and torch.isfinite(logits.grad).all()
    # no mask: every example is labeled
    expected_all = F.cross_entropy(logits, labels.clamp(max=3))
    assert masked_cross_entropy(logits, labels.clamp(max=3), None).item() == pytest.approx(
        expected_all.item()
    )


def test_registry_matches_the_spec() -> None:
    """Every loss type a spec may name has a function (classifier losses here, causal-LM losses in
    ``worker.engine.lm_losses``), and nothing else is registered."""
    from worker.engine.lm_losses import LM_LOSSES

    union = typing.get_args(typing.get_args(LossSpec)[0])
    spec_types = {typing.get_args(cls.model_fields["type"].annotation)[0] for cls in union}
    assert set(LOSSES) | set(LM_LOSSES) == spec_types
