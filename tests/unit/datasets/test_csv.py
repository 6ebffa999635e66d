"""distill.datasets.csv: CSV datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import write

from distill.datasets import (
    MAX_CLASSES,
    DatasetError,
    DatasetInfo,
    inspect_dataset,
    read_dataset,
    types,
)


def test_csv_with_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "x1,x2,label\n0.5,1,0\n-2,3e-1,2\n\n")
    ds = read_dataset(path, "d.csv")
    assert ds.x.dtype == np.float32 and ds.x.shape == (2, 2)
    np.testing.assert_allclose(ds.x, [[0.5, 1.0], [-2.0, 0.3]], rtol=1e-6)
    assert ds.y is not None and ds.y.dtype == np.int64
    assert ds.y.tolist() == [0, 2]
    info = inspect_dataset(path, "d.csv")
    assert info == DatasetInfo(format="csv", examples=2, input_shape=[2], num_classes=3, has_labels=True)


def test_csv_label_column_anywhere_float_labels_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", "\ufeffLabel, a ,b\r\n1.0,1,2\r\n0,3,4\r\n")
    ds = read_dataset(path, "d.csv")
    assert ds.y is not None and ds.y.tolist() == [1, 0]
    assert ds.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_csv_without_labels(tmp_path: Path) -> None:
    info = inspect_dataset(write(tmp_path, "d.csv", "a,b,c\n1,2,3\n"), "d.csv")
    assert info.has_labels is False and info.num_classes is None and info.input_shape == [3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "x1,x2,x3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,abc\n",
            r"row 7 \(line 8\), column 'x3': 'abc'",
        ),
        ("a,b\n1,2\n3\n", "row 2 .* has 1 values but the header has 2 columns"),
        ("a,b\n1,2\n3,4,5\n", "has 3 values"),
        ("a,b\n1,\n", "column 'b' is empty"),
        ("a,b\n1,nan\n", "not a finite number"),
        ("a,b\n1,inf\n", "not a finite number"),
        ("a,label\n1,1.5\n", "CSV row 1, column 'label': label 1.5 is not a class index"),
        ("a,label\n1,0\n2,-1\n", "CSV row 2, column 'label': label -1 .* integers >= 0"),
        ("a,label\n1,x\n", "'x' is not a number"),
        (f"a,label\n1,{MAX_CLASSES}\n", "too large"),
        ("a,b\n", "no data rows"),
        ("\n\n", "no rows"),
        ("label\n1\n", "no feature columns"),
        ("1,2,3\n4,5,6\n", "header"),
        ("a,a\n1,2\n", "twice"),
        ("a,,b\n1,2,3\n", "column 2 has no name"),
        ("a,label,LABEL\n1,2,3\n", "'label' columns"),
        ("a,b\n1,1e39\n", "too large for float32"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "d.csv", text)
    with pytest.raises(DatasetError, match=expected):
        read_dataset(path, "d.csv")
    with pytest.raises(DatasetError, match=expected):  # the API's bounded-memory check says the same
        inspect_dataset(path, "d.csv")


def test_csv_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="UTF-8"):
        read_dataset(write(tmp_path, "d.csv", b"a,b\n\xff\xfe,1\n"), "d.csv")


def test_csv_cell_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(types, "MAX_CELLS", 5)
    path = write(tmp_path, "d.csv", "a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(DatasetError, match=r"row 3 .*5 cells"):
        read_dataset(path, "d.csv")
