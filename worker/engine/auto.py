"""``"auto"`` temperature and alpha: a small, budgeted search scored on the validation split.

Candidates are tried in order of how often they work well in the literature (T around 2 to 8, alpha high
when the teacher is strong), so a small budget tries the likeliest values first. The caller supplies the
trial (a short training run returning validation accuracy); this module only chooses and explains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TEMPERATURES = (4.0, 2.0, 8.0, 1.0, 16.0, 3.0, 6.0)
ALPHAS = (0.9, 0.5, 0.7, 0.99, 0.3, 0.1)
PAIRS = (
    (4.0, 0.9),
    (2.0, 0.9),
    (8.0, 0.9),
    (4.0, 0.5),
    (1.0, 0.9),
    (8.0, 0.5),
    (2.0, 0.5),
    (16.0, 0.9),
    (4.0, 0.7),
    (4.0, 0.99),
)


@dataclass
class AutoChoice:
    temperature: float
    alpha: float
    trials: list[dict[str, float]] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "alpha": self.alpha,
            "trials": self.trials,
            "reason": self.reason,
        }


def candidates(temperature: float | str, alpha: float | str, budget: int) -> list[tuple[float, float]]:
    """Up to ``budget`` (temperature, alpha) pairs; a fixed value stays fixed."""
    if budget < 1:
        raise ValueError('"auto" needs a budget of at least one trial run')
    if temperature == "auto" and alpha == "auto":
        pairs = list(PAIRS)
    elif temperature == "auto":
        pairs = [(t, float(alpha)) for t in TEMPERATURES]
    elif alpha == "auto":
        pairs = [(float(temperature), a) for a in ALPHAS]
    else:
        return [(float(temperature), float(alpha))]
    return pairs[:budget]


def choose(
    temperature: float | str, alpha: float | str, budget: int, trial: Callable[[float, float], float]
) -> AutoChoice:
    """Run ``trial(T, alpha) -> validation accuracy`` per candidate; keep the best (the earliest on ties)."""
    pairs = candidates(temperature, alpha, budget)
    trials = []
    for t, a in pairs:
        trials.append({"temperature": t, "alpha": a, "val_accuracy": float(trial(t, a))})
    best = max(trials, key=lambda row: row["val_accuracy"])  # max keeps the first of equal scores
    runner_up = sorted((row["val_accuracy"] for row in trials), reverse=True)[1:2]
    margin = f", {best['val_accuracy'] - runner_up[0]:.4f} ahead of the next" if runner_up else ""
    reason = (
        f"highest validation accuracy ({best['val_accuracy']:.4f}) of {len(trials)} short trial runs{margin}"
    )
    return AutoChoice(temperature=best["temperature"], alpha=best["alpha"], trials=trials, reason=reason)
