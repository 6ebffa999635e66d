"""Several teachers as one model (reports measure "the teacher" through it when there are several)."""

from __future__ import annotations

import torch
from torch import nn


class WeightedEnsemble(nn.Module):
    """Several teachers as one model: log of the weighted mean of their class probabilities.

    Its top class is the mixture's, which is what a student of several teachers learns; reports use it to
    measure "the teacher" when there are several.
    """

    def __init__(self, members: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        total = sum(weights)
        self.members = nn.ModuleList(members)
        self.weights: torch.Tensor
        self.register_buffer("weights", torch.tensor([w / total for w in weights]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([member(x).float().softmax(dim=-1) for member in self.members])
        weights = self.weights.view(-1, *([1] * (probs.ndim - 1)))
        return (probs * weights).sum(dim=0).clamp_min(1e-12).log()
