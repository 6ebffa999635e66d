"""bench/llm.py's task: the working is the column addition, prompts are disjoint, answers are read after the
working."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, where bench/ lives

from bench.llm import final_answer, problems, record, working


@pytest.mark.parametrize(("a", "b"), [(47, 285), (999, 999), (0, 0), (500, 500), (123, 877)])
def test_working_is_the_column_addition(a: int, b: int) -> None:
    steps = working(a, b, 3).split(";")
    assert len(steps) == 3
    digits, carry = [], 0
    for i, step in enumerate(steps):
        terms, total = step.split("=")
        parts = [int(t) for t in terms.split("+")]
        assert parts[:2] == [a // 10**i % 10, b // 10**i % 10]
        assert parts[2:] == ([carry] if carry else [])
        assert int(total) == sum(parts)
        digits.append(int(total) % 10)
        carry = int(total) // 10
    assert int(str(carry) + "".join(map(str, reversed(digits)))) == a + b


def test_records_and_answers() -> None:
    rec = record(47, 285, 3)
    assert rec["messages"][0] == {"role": "user", "content": "047+285"}
    answer = rec["messages"][1]["content"]
    assert answer == "<think>\n7+5=12;4+8+1=13;0+2+1=3\n</think>\n332"
    assert final_answer(answer) == "332"
    assert record(47, 285, 3, with_working=False)["messages"][1]["content"] == "332"
    assert final_answer(" 332 ") == "332"


def test_train_and_test_prompts_are_disjoint_and_distinct() -> None:
    train, test = problems(3, 500, 100, seed=0)
    assert len(set(train)) == 500 and len(set(test)) == 100
    assert not set(train) & set(test)
    assert problems(3, 500, 100, seed=0) == (train, test)
    with pytest.raises(SystemExit):
        problems(1, 60, 10, seed=0)
