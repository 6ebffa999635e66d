"""distill.datasets.sniff: the format of a file, from its name and its first bytes (the one sniffer)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from dataset_files import jsonl, npz, parquet, write

from distill.datasets import (
    DatasetError,
    detect_format,
    inspect_dataset,
    read_dataset,
)


def test_format_sniffed_without_extension(tmp_path: Path) -> None:
    path = npz(tmp_path, "blob.npz", x=np.ones((2, 2)))
    renamed = path.rename(tmp_path / "blob")
    assert inspect_dataset(renamed, "upload").format == "npz"
    csv_path = write(tmp_path, "data", "a,b\n1,2\n")
    assert inspect_dataset(csv_path, "data.txt").format == "csv"


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


def test_new_formats_sniffed_without_extension(tmp_path: Path) -> None:
    pq_path = parquet(tmp_path, {"a": [1.0, 2.0]}, "blob")
    assert detect_format(pq_path, "upload") == "parquet"
    assert inspect_dataset(pq_path, "upload").format == "parquet"
    lines = jsonl(tmp_path, ["", {"text": "hi, there"}], "lines")
    assert inspect_dataset(lines, "upload.txt").kind == "text"
    with pytest.raises(DatasetError, match="JSON array"):
        inspect_dataset(write(tmp_path, "arr", '[{"x": [1]}]'), "data.json")
