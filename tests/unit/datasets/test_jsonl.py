"""distill.datasets.jsonl: JSON Lines datasets (numeric fields, x arrays, or texts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dataset_files import jsonl, write

from distill.datasets import (
    MAX_CLASSES,
    MAX_TEXT_CHARS,
    DatasetError,
    DatasetInfo,
    inspect_dataset,
    read_dataset,
    read_text_dataset,
    types,
)


def test_jsonl_array_inputs(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"x": [[0, 1], [2, 3]], "label": 4}, "", {"label": 1.0, "x": [[4, 5.5], [6, 7]]}])
    ds = read_dataset(path, "d.jsonl")
    assert ds.x.dtype == np.float32 and ds.x.shape == (2, 2, 2)
    assert ds.x.tolist() == [[[0, 1], [2, 3]], [[4, 5.5], [6, 7]]]
    assert ds.y is not None and ds.y.dtype == np.int64 and ds.y.tolist() == [4, 1]
    assert inspect_dataset(path, "d.ndjson") == DatasetInfo(
        format="jsonl", examples=2, input_shape=[2, 2], num_classes=5, has_labels=True
    )


def test_jsonl_numeric_fields_like_csv(tmp_path: Path) -> None:
    path = write(
        tmp_path, "d.jsonl", '\ufeff{"a": 1, "b": 2.5, "Label": 0}\r\n{"b": -1, "a": 3, "Label": 2}\r\n'
    )
    ds = read_dataset(path, "d.jsonl")
    assert ds.x.tolist() == [[1.0, 2.5], [3.0, -1.0]]  # by name, in the first line's order
    assert ds.y is not None and ds.y.tolist() == [0, 2]
    assert read_dataset(jsonl(tmp_path, [{"a": 1}, {"a": 2}]), "d.jsonl").y is None


def test_jsonl_text(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path, [{"text": "great film", "label": 1}, {"text": "", "label": 0}, {"text": "é\n", "label": 1}]
    )
    info = inspect_dataset(path, "d.jsonl")
    assert info == DatasetInfo(
        format="jsonl", examples=3, input_shape=[], num_classes=2, has_labels=True, kind="text"
    )
    assert info.to_meta()["kind"] == "text"
    ds = read_text_dataset(path, "d.jsonl")
    assert ds.texts == ["great film", "", "é\n"] and ds.y is not None and ds.y.tolist() == [1, 0, 1]
    with pytest.raises(DatasetError, match="is a text dataset"):
        read_dataset(path, "d.jsonl")
    with pytest.raises(DatasetError, match="holds numeric inputs, not texts"):
        read_text_dataset(jsonl(tmp_path, [{"x": [1, 2]}], "n.jsonl"), "n.jsonl")
    unlabeled = inspect_dataset(jsonl(tmp_path, [{"text": "a"}], "u.jsonl"), "u.jsonl")
    assert unlabeled.has_labels is False and unlabeled.num_classes is None


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([{"a": 1}, {"a": 2}, '{"a": 3,}'], r"line 3: malformed JSON \(.* at column 9\)"),
        ([{"a": 1}, "", '{"a": NaN}'], "line 3: NaN is not a finite number"),
        ([{"a": 1}, "[1, 2]"], "line 2 is a list, not a JSON object"),
        ([{"a": 1}, {"a": "1"}], "line 2, field 'a': a string is not a number"),
        ([{"a": 1}, {"a": True}], "line 2, field 'a': a boolean is not a number"),
        ([{"a": 1}, '{"a": 1e400}'], "line 2, field 'a': inf is not a finite number"),
        ([{"a": 1, "b": 2}, {"a": 1}], "line 2: missing field 'b'"),
        ([{"a": 1}, {"a": 1, "c": 2}], r"line 2: unexpected field\(s\) \['c'\]"),
        ([{"a": [1, 2], "b": 1}], "field 'a' holds a list; put array inputs in one field 'x'"),
        ([{"a": 1, "label": 0}, {"a": 2}], r"line 2: missing 'label' \(line 1 has one\)"),
        ([{"a": 1}, {"a": 2, "label": 0}], "line 2 has a 'label' but line 1 has none"),
        ([{"a": 1, "label": 0}, {"a": 2, "label": 1.5}], "line 2: label 1.5 is not a class index"),
        ([{"a": 1, "label": "cat"}], 'line 1: label "cat" is not a class index'),
        ([{"a": 1, "label": -1}], "line 1: label -1 is not a class index"),
        ([{"a": 1, "label": True}], "line 1: label true is not a class index"),
        ([{"a": 1, "label": MAX_CLASSES}], "too large"),
        ([{"a": 1, "label": 0, "Label": 1}], "2 label fields"),
        ([{"label": 1}], "line 1 has no inputs"),
        ([{"x": [[0, 1], [2, 3]]}, {"x": [[0, 1], [2]]}], "line 2: 'x' is ragged"),
        (
            [{"x": [[0, 1], [2, 3]]}, {"x": [0, 1, 2, 3]}],
            r"line 2: 'x' has shape \[4\] but line 1 has \[2, 2\]",
        ),
        ([{"x": [1, "a"]}], "'x' must hold only numbers .*strings"),
        ([{"x": [1, None]}], "'x' must hold only numbers"),
        ([{"x": [True, False]}], "booleans"),
        ([{"x": []}], "no values"),
        ([{"x": [[[[1]]]]}], "1 to 3 dims"),
        ([{"x": [1, 1e39]}], "too large for float32"),
        ([{"x": [1, 2], "id": 3}], r"line 1: unexpected field\(s\) \['id'\]"),
        ([{"x": [1, 2]}, {"a": 1}], "line 2 has numeric fields but line 1 has an array input"),
        ([{"text": "a", "label": 0}, {"x": [1], "label": 1}], "line 2: missing 'text'"),
        ([{"text": "a", "label": 0}, {"a": 1.0, "label": 1}], "line 2: missing 'text'.*not both"),
        ([{"a": 1.0}, {"text": "b"}], "line 2 is a text example but line 1 has numeric inputs"),
        ([{"text": "a"}, {"text": 5}], "line 2: 'text' must be a string, not a number"),
        (
            [{"text": "a" * (MAX_TEXT_CHARS + 1)}],
            "line 1: the text has 100,001 characters, more than the 100,000",
        ),
        (["", "  "], "no examples"),
    ],
)
def test_jsonl_errors(tmp_path: Path, lines: list[Any], expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        inspect_dataset(jsonl(tmp_path, lines), "d.jsonl")


def test_jsonl_cell_limit_and_encoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(write(tmp_path, "b.jsonl", b'{"text": "\xff"}\n'), "b.jsonl")
    monkeypatch.setattr(types, "MAX_CELLS", 10)
    path = jsonl(tmp_path, [{"x": [1, 2, 3], "label": 0}] * 3)
    with pytest.raises(DatasetError, match="line 3: the dataset passes 10 values"):
        read_dataset(path, "d.jsonl")
