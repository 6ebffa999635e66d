"""distill.datasets: reading and validating uploaded CSV / NPZ datasets."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from distill.datasets import (
    BUILTIN_INFO,
    MAX_CLASSES,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    inspect_dataset,
    read_dataset,
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

    code = "import sys, distill.datasets, distill.modelfile; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
