"""Language-model JSONL (prompt/completion or chat messages): sniffed as its own kind, validated line by
line with messages that name the line, counted in the metadata the API records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from distill.datasets import (
    DatasetError,
    DatasetInfo,
    LMDataset,
    inspect_dataset,
    read_dataset,
    read_lm_dataset,
)


def write(tmp_path: Path, rows: list[Any], name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CHAT = {
    "messages": [
        {"role": "system", "content": "add"},
        {"role": "user", "content": "1+2"},
        {"role": "assistant", "content": "3"},
    ]
}


def test_prompt_completion_and_chat_records_read_and_inspect(tmp_path: Path) -> None:
    rows = [{"prompt": "12+7=", "completion": "19"}, {"prompt": "1+1="}, CHAT]
    path = write(tmp_path, rows)
    ds = read_lm_dataset(path, "data.jsonl")
    assert isinstance(ds, LMDataset) and len(ds) == 3
    assert ds.records[1] == {"prompt": "1+1=", "completion": None}
    assert ds.records[2] == CHAT
    info = inspect_dataset(path, "data.jsonl")
    assert info.kind == "lm" and info.examples == 3 and info.has_labels is False  # one record lacks one
    assert DatasetInfo.from_meta(info.to_meta()) == info
    complete = inspect_dataset(write(tmp_path, [rows[0], CHAT], "c.jsonl"), "c.jsonl")
    assert (
        complete.has_labels is True
        and DatasetInfo.of(read_lm_dataset(tmp_path / "c.jsonl", "c.jsonl"), "jsonl") == complete
    )


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([{"prompt": 3, "completion": "x"}], "line 1: 'prompt' must be a string"),
        ([{"prompt": "a", "completion": "b", "label": 1}], "line 1: unexpected field(s) ['label']"),
        ([{"prompt": "a"}, {"text": "b"}], "line 2"),
        ([{"messages": []}], "non-empty list"),
        ([{"messages": [{"role": "robot", "content": "x"}]}], "role 'robot'"),
        ([{"messages": [{"role": "assistant", "content": "x"}]}], "no user turn"),
    ],
)
def test_bad_records_name_the_line_and_what_to_fix(tmp_path: Path, rows: list[Any], says: str) -> None:
    path = write(tmp_path, rows)
    for check in (read_lm_dataset, inspect_dataset):
        with pytest.raises(DatasetError) as exc:
            check(path, "data.jsonl")
        assert says in str(exc.value)


def test_lm_records_are_not_numeric_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="causal_lm"):
        read_dataset(write(tmp_path, [{"prompt": "a", "completion": "b"}]), "data.jsonl")
