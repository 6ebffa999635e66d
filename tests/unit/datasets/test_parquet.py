"""distill.datasets.parquet: Parquet datasets (columns, a list column x, or texts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from dataset_files import parquet, write

from distill.datasets import (
    MAX_TEXT_CHARS,
    DatasetError,
    DatasetInfo,
    inspect_dataset,
    read_dataset,
    read_text_dataset,
    types,
)


def test_parquet_columns_like_csv(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"a": [0.5, -2.0, 3.0], "b": pa.array([1, 2, 3], pa.int8()), "Label": [1, 0, 2]})
    ds = read_dataset(path, "d.parquet")
    assert ds.x.dtype == np.float32 and ds.x.tolist() == [[0.5, 1.0], [-2.0, 2.0], [3.0, 3.0]]
    assert ds.y is not None and ds.y.dtype == np.int64 and ds.y.tolist() == [1, 0, 2]
    assert inspect_dataset(path, "d.pq") == DatasetInfo(
        format="parquet", examples=3, input_shape=[2], num_classes=3, has_labels=True
    )
    unlabeled = read_dataset(parquet(tmp_path, {"x": [1.0, 2.0]}, "u.parquet"), "u.parquet")  # scalar 'x'
    assert unlabeled.y is None and unlabeled.x.shape == (2, 1)


def test_parquet_array_column(tmp_path: Path) -> None:
    images = [[[float(4 * i + 2 * r + c) for c in range(2)] for r in range(2)] for i in range(5)]
    path = parquet(tmp_path, {"x": images, "label": [0, 1, 0, 1, 3]}, row_group_size=2)  # several chunks
    ds = read_dataset(path, "d.parquet")
    assert ds.x.shape == (5, 2, 2) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, np.arange(20, dtype=np.float32).reshape(5, 2, 2))
    assert ds.y is not None and ds.y.tolist() == [0, 1, 0, 1, 3]
    fixed = pa.array([[1, 2, 3], [4, 5, 6]], type=pa.list_(pa.int32(), 3))
    ds = read_dataset(parquet(tmp_path, {"x": fixed}, "f.parquet"), "f.parquet")
    assert ds.x.tolist() == [[1, 2, 3], [4, 5, 6]] and ds.y is None


def test_parquet_text(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"text": ["good", "bad", "ünïcode"], "label": [1, 0, 1]})
    info = inspect_dataset(path, "d.parquet")
    assert info.kind == "text" and info.input_shape == [] and info.num_classes == 2
    ds = read_text_dataset(path, "d.parquet")
    assert ds.texts == ["good", "bad", "ünïcode"] and ds.y is not None and ds.y.tolist() == [1, 0, 1]


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ({"a": [1.0, 2.0], "b": ["x", "y"]}, "column 'b' has type string; it must hold numbers"),
        ({"a": [1.0, None, 3.0]}, "column 'a', row 2 has a null"),
        ({"a": [1.0, float("nan")]}, "column 'a', row 2: nan is not a finite number"),
        ({"a": [1.0, 2.0], "label": [0, 1.5]}, "column 'label', row 2: label 1.5 is not a class index"),
        ({"a": [1.0, 2.0], "label": [0, -1]}, "row 2: label -1"),
        ({"a": [1.0, 2.0], "label": [0, None]}, "column 'label', row 2 is null"),
        ({"a": [1.0, 2.0], "label": ["cat", "dog"]}, "labels must be integer class indices"),
        ({"a": [1.0], "label": [0], "LABEL": [1]}, "2 'label' columns"),
        ({"label": [0, 1]}, "no feature columns"),
        ({"x": [[1.0, 2.0], [3.0]]}, r"'x' is ragged: row 2 has a list of 1 values"),
        ({"x": [[[1.0, 2.0]], [[3.0, 4.0]], [[5.0]]]}, r"ragged: row 3 .* at depth 2"),
        ({"x": [[1.0, 2.0], None]}, "'x', row 2 has a null list"),
        ({"x": [[1.0, 2.0], [3.0, None]]}, "'x', row 2 has a null"),
        ({"x": [[1.0, 2.0], [3.0, float("inf")]]}, "row 2: inf is not a finite number"),
        ({"x": [["a"], ["b"]]}, "'x' has type string"),
        ({"x": [[], []]}, "empty lists"),
        ({"x": [[[[[1.0]]]]]}, "4 levels of lists"),
        ({"x": [[1.0], [2.0]], "other": [1, 2]}, r"also has \['other'\]"),
        ({"feat": [[1.0], [2.0]]}, "column 'feat' holds lists"),
        ({"a": pa.array([], pa.float64())}, "no rows"),
        ({"text": ["a", None]}, "'text', row 2 is null"),
        ({"text": ["a", "b"], "a": [1, 2]}, "only other column allowed is 'label'"),
        ({"text": ["a", "b" * (MAX_TEXT_CHARS + 1)]}, r"'text', row 2: the text has 100,001 characters"),
        ({"a": [1.0, 1e39]}, "too large for float32"),
    ],
)
def test_parquet_errors(tmp_path: Path, columns: dict[str, Any], expected: str) -> None:
    path = parquet(tmp_path, columns)
    with pytest.raises(DatasetError, match=expected):
        read_dataset(path, "d.parquet")
    with pytest.raises(DatasetError, match=expected):  # the API's batched check says the same
        inspect_dataset(path, "d.parquet")


def test_parquet_cell_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = parquet(tmp_path, {"x": [[1.0, 2.0, 3.0]] * 2, "label": [0, 1]})
    assert len(read_dataset(path, "d.parquet")) == 2
    monkeypatch.setattr(types, "MAX_CELLS", 7)
    with pytest.raises(DatasetError, match="holds 8 values, more than the 7 allowed"):
        read_dataset(path, "d.parquet")


def test_parquet_damaged_or_misnamed(tmp_path: Path) -> None:
    path = parquet(tmp_path, {"a": list(range(100))})
    data = path.read_bytes()
    with pytest.raises(DatasetError, match="cannot read the Parquet file"):
        read_dataset(write(tmp_path, "t.parquet", data[: len(data) // 2]), "t.parquet")
    with pytest.raises(DatasetError, match="not a Parquet file"):
        read_dataset(write(tmp_path, "n.parquet", "a,b\n1,2\n"), "n.parquet")
    for name in ("d.csv", "d.npz", "d.jsonl"):
        with pytest.raises(DatasetError, match=r"is a Parquet file; upload it with a \.parquet name"):
            read_dataset(path, name)
