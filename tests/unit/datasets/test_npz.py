"""distill.datasets.npz: NPZ datasets, never unpickled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import npz, npz_of, write

from distill.datasets import (
    DatasetError,
    DatasetInfo,
    inspect_dataset,
    read_dataset,
)


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
    path = npz_of(tmp_path, arrays)
    with pytest.raises(DatasetError, match=expected):
        read_dataset(path, "d.npz")
    with pytest.raises(DatasetError, match=expected):  # the API's bounded-memory check says the same
        inspect_dataset(path, "d.npz")


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
    with pytest.raises(DatasetError, match="object array"):
        inspect_dataset(path, "evil.npz")
    assert not marker.exists()


def test_truncated_npz(tmp_path: Path) -> None:
    path = npz(tmp_path, x=np.ones((50, 20)))
    data = path.read_bytes()
    with pytest.raises(DatasetError):
        read_dataset(write(tmp_path, "t.npz", data[: len(data) // 2]), "t.npz")
    with pytest.raises(DatasetError):
        inspect_dataset(write(tmp_path, "t.npz", data[: len(data) // 2]), "t.npz")


def test_a_model_archive_uploaded_as_a_dataset_is_told_where_it_belongs(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "my-model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.safetensors", b"\0" * 16)
    with pytest.raises(DatasetError, match=r"is a model archive .* upload it with purpose=model"):
        inspect_dataset(path, "my-model.zip")
