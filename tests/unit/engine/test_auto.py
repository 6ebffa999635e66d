"""The "auto" search: budgeted candidates, fixed values stay fixed, the best trial wins."""

from __future__ import annotations

import pytest

from worker.engine.auto import candidates, choose


def test_budget_limits_the_trials_and_fixed_values_stay_fixed():
    assert len(candidates("auto", "auto", 3)) == 3
    assert {a for _, a in candidates("auto", 0.5, 4)} == {0.5}
    assert {t for t, _ in candidates(2.0, "auto", 4)} == {2.0}
    assert candidates(4.0, 0.9, 10) == [(4.0, 0.9)]
    with pytest.raises(ValueError, match="budget"):
        candidates("auto", 0.9, 0)


def test_choose_keeps_the_best_trial_and_says_why():
    scores = {(4.0, 0.9): 0.80, (2.0, 0.9): 0.85, (8.0, 0.9): 0.83}
    choice = choose("auto", 0.9, 3, lambda t, a: scores[(t, a)])
    assert (choice.temperature, choice.alpha) == (2.0, 0.9)
    assert [row["val_accuracy"] for row in choice.trials] == [0.80, 0.85, 0.83]
    assert "0.8500" in choice.reason and "3 short trial runs" in choice.reason


def test_ties_keep_the_earlier_more_conventional_candidate():
    choice = choose("auto", "auto", 4, lambda t, a: 0.5)
    assert (choice.temperature, choice.alpha) == (4.0, 0.9)
