"""distill.datasets: reading and validating uploaded CSV / NPZ / Parquet / JSONL datasets."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import datasets
from distill.datasets import (
    BUILTIN_INFO,
    MAX_CLASSES,
    MAX_TEXT_CHARS,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    TextDataset,
    detect_format,
    inspect_dataset,
    read_dataset,
    read_text_dataset,
)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def npz(tmp_path: Path, name: str = "d.npz", **arrays: np.ndarray) -> Path:
    return npz_of(tmp_path, arrays, name)


def npz_of(tmp_path: Path, arrays: dict[str, np.ndarray], name: str = "d.npz") -> Path:
    path = tmp_path / name
    with path.open("wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle clashes with **kwds
    return path


# --- CSV ------------------------------------------------------------------------------------------------


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
    with pytest.raises(DatasetError, match=expected):
        read_dataset(write(tmp_path, "d.csv", text), "d.csv")


def test_csv_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="UTF-8"):
        read_dataset(write(tmp_path, "d.csv", b"a,b\n\xff\xfe,1\n"), "d.csv")


# --- NPZ ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (5, 8, 8), (5, 3, 4, 4)])
def test_npz_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    path = npz(tmp_path, x=x, y=np.array([0, 1, 2, 1.0, 4]))
    ds = read_dataset(path, "d.npz")
    assert ds.x.dtype == np.float32 and ds.x.shape == shape
    assert ds.y is not None and ds.y.dtype == np.int64 and ds.y.tolist() == [0, 1, 2, 1, 4]
    info = inspect_dataset(path, "d.npz")
    assert info.to_meta() == {
        "format": "npz",
        "examples": 5,
        "input_shape": list(shape[1:]),
        "num_classes": 5,
        "has_labels": True,
        "kind": "tabular",
    }
    assert DatasetInfo.from_meta(info.to_meta()) == info


def test_npz_without_labels_and_int_inputs(tmp_path: Path) -> None:
    ds = read_dataset(npz(tmp_path, x=np.ones((4, 2), dtype=np.uint8), other=np.zeros(3)), "d.npz")
    assert ds.y is None and ds.x.dtype == np.float32


def test_format_sniffed_without_extension(tmp_path: Path) -> None:
    path = npz(tmp_path, "blob.npz", x=np.ones((2, 2)))
    renamed = path.rename(tmp_path / "blob")
    assert inspect_dataset(renamed, "upload").format == "npz"
    csv_path = write(tmp_path, "data", "a,b\n1,2\n")
    assert inspect_dataset(csv_path, "data.txt").format == "csv"


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"y": np.zeros(3)}, "no array named 'x'"),
        ({"x": np.zeros(3)}, "2-D to 4-D"),
        ({"x": np.zeros((2, 2, 2, 2, 2))}, "2-D to 4-D"),
        ({"x": np.zeros((0, 3))}, "zero examples"),
        ({"x": np.zeros((3, 0))}, "zero features"),
        ({"x": np.array([[1.0, np.nan]])}, "NaN or infinite"),
        ({"x": np.array([[1.0, np.inf]])}, "NaN or infinite"),
        ({"x": np.ones((3, 2)), "y": np.zeros(2)}, "differ in length"),
        ({"x": np.ones((3, 2)), "y": np.zeros((3, 1))}, "must be 1-D"),
        ({"x": np.ones((2, 2)), "y": np.array([0.0, 1.5])}, r"y\[1\]: label 1.5"),
        ({"x": np.ones((2, 2)), "y": np.array([0, -3])}, ">= 0"),
        ({"x": np.ones((2, 2)), "y": np.array(["a", "b"])}, "dtype"),
        ({"x": np.array([["a", "b"]])}, "real numbers"),
        ({"x": np.ones((2, 2), dtype=np.complex64)}, "real numbers"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        read_dataset(npz_of(tmp_path, arrays), "d.npz")


def test_npz_object_array_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.write_text, ("x",))  # would run on unpickling

    x = np.empty(2, dtype=object)
    x[0], x[1] = Evil(), Evil()
    path = tmp_path / "evil.npz"
    np.savez(path, x=x)
    with pytest.raises(DatasetError, match="object array"):
        read_dataset(path, "evil.npz")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("d.npz", b"", "empty"),
        ("d.csv", b"", "empty"),
        ("d", b"", "empty"),
        ("d.npz", b"not a zip at all", "not an NPZ"),
        ("d.npz", b"PK\x03\x04garbage", "NPZ"),
        ("d.npz", pickle.dumps({"x": [1, 2]}), "pickle"),
        ("d.pkl", pickle.dumps({"x": [1, 2]}), "pickle"),
        ("d.bin", bytes(range(256)) * 4, "unknown dataset format"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    with pytest.raises(DatasetError, match=expected):
        read_dataset(write(tmp_path, name, data), name)


def test_npy_instead_of_npz(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    np.save(path, np.ones((2, 2)))
    for name in ("a.npz", "a.npy"):
        with pytest.raises(DatasetError, match=r"single \.npy"):
            read_dataset(path, name)


def test_csv_named_file_that_is_a_zip(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.ones((2, 2)))
    with pytest.raises(DatasetError, match="zip archive"):
        read_dataset(path, "d.csv")


def test_truncated_npz(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.ones((50, 20)))
    data = path.read_bytes()
    with pytest.raises(DatasetError):
        read_dataset(write(tmp_path, "t.npz", data[: len(data) // 2]), "t.npz")


# --- metadata -------------------------------------------------------------------------------------------


def test_builtin_info() -> None:
    assert BUILTIN_INFO["digits"].input_shape == [8, 8] and BUILTIN_INFO["digits"].examples == 1797
    assert BUILTIN_INFO["mnist1d"].input_shape == [40] and BUILTIN_INFO["mnist1d"].examples == 5000
    assert all(i.num_classes == 10 and i.has_labels for i in BUILTIN_INFO.values())


def test_from_meta_rejects_incomplete() -> None:
    with pytest.raises(DatasetError, match="metadata"):
        DatasetInfo.from_meta({"format": "csv"})


def test_array_dataset_helpers() -> None:
    ds = ArrayDataset(np.zeros((4, 2, 3), dtype=np.float32), np.array([0, 3, 1, 1]))
    assert len(ds) == 4 and ds.input_shape == [2, 3] and ds.num_classes == 4
    sub = ds.subset(np.array([0, 2]))
    assert len(sub) == 2 and sub.y is not None and sub.y.tolist() == [0, 1]


def test_no_torch_import() -> None:
    # The API imports this module; it must stay light (checked in a fresh interpreter).
    import subprocess

    code = (
        "import sys, distill.datasets, distill.modelfile; "
        "print('torch' in sys.modules, 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_from_meta_kind_backwards_compatible() -> None:
    old = {"format": "csv", "examples": 3, "input_shape": [2], "num_classes": 2, "has_labels": True}
    assert DatasetInfo.from_meta(old).kind == "tabular"
    text = DatasetInfo(
        format="jsonl", examples=2, input_shape=[], num_classes=None, has_labels=False, kind="text"
    )
    assert DatasetInfo.from_meta(text.to_meta()) == text
    with pytest.raises(DatasetError, match="kind"):
        DatasetInfo.from_meta({**old, "kind": "audio"})


def test_csv_cell_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "MAX_CELLS", 5)
    path = write(tmp_path, "d.csv", "a,b\n1,2\n3,4\n5,6\n")
    with pytest.raises(DatasetError, match=r"row 3 .*5 cells"):
        read_dataset(path, "d.csv")


# --- Parquet --------------------------------------------------------------------------------------------


def parquet(tmp_path: Path, columns: dict[str, Any], name: str = "d.parquet", **kw: Any) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path, **kw)
    return path


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
    with pytest.raises(DatasetError, match=expected):
        read_dataset(parquet(tmp_path, columns), "d.parquet")


def test_parquet_cell_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = parquet(tmp_path, {"x": [[1.0, 2.0, 3.0]] * 2, "label": [0, 1]})
    assert len(read_dataset(path, "d.parquet")) == 2
    monkeypatch.setattr(datasets, "MAX_CELLS", 7)
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


# --- JSONL ----------------------------------------------------------------------------------------------


def jsonl(tmp_path: Path, lines: list[Any], name: str = "d.jsonl") -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return write(tmp_path, name, text)


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


def test_text_dataset_helpers() -> None:
    ds = TextDataset(["a", "b", "c", "d"], np.array([0, 2, 1, 1]))
    assert len(ds) == 4 and ds.input_shape == [] and ds.num_classes == 3
    sub = ds.subset(np.array([1, 3]))
    assert sub.texts == ["b", "d"] and sub.y is not None and sub.y.tolist() == [2, 1]
    assert TextDataset(["a"]).num_classes is None


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
    monkeypatch.setattr(datasets, "MAX_CELLS", 10)
    path = jsonl(tmp_path, [{"x": [1, 2, 3], "label": 0}] * 3)
    with pytest.raises(DatasetError, match="line 3: the dataset passes 10 values"):
        read_dataset(path, "d.jsonl")


def test_new_formats_sniffed_without_extension(tmp_path: Path) -> None:
    pq_path = parquet(tmp_path, {"a": [1.0, 2.0]}, "blob")
    assert detect_format(pq_path, "upload") == "parquet"
    assert inspect_dataset(pq_path, "upload").format == "parquet"
    lines = jsonl(tmp_path, ["", {"text": "hi, there"}], "lines")
    assert inspect_dataset(lines, "upload.txt").kind == "text"
    with pytest.raises(DatasetError, match="JSON array"):
        inspect_dataset(write(tmp_path, "arr", '[{"x": [1]}]'), "data.json")
