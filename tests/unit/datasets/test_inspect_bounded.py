"""inspect_dataset (what the API runs on an upload): the same answers as reading the whole file, a chunk
at a time, and an NPZ that would inflate past the limit refused before anything is inflated."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dataset_files import jsonl, npz, parquet, write

from distill.datasets import DatasetError, DatasetInfo, csv, inspect_dataset, read_dataset, read_text_dataset
from distill.datasets import jsonl as jsonl_reader
from distill.datasets import npz as npz_reader
from distill.datasets import parquet as parquet_reader


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunks, so that these small files cross many chunk boundaries."""
    monkeypatch.setattr(csv, "CHUNK_ROWS", 3)
    monkeypatch.setattr(jsonl_reader, "CHUNK_ROWS", 3)
    monkeypatch.setattr(npz_reader, "CHUNK_BYTES", 40)
    monkeypatch.setattr(parquet_reader, "BATCH_CELLS", 6)


def test_csv_inspect_agrees_with_read_across_chunks(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 0.5},{i % 4}" for i in range(10))
    path = write(tmp_path, "d.csv", f"a,b,label\n{rows}\n")
    ds = read_dataset(path, "d.csv")
    assert ds.x.shape == (10, 2) and ds.y is not None and ds.y.tolist() == [i % 4 for i in range(10)]
    assert inspect_dataset(path, "d.csv") == DatasetInfo.of(ds, "csv")


def test_a_bad_label_in_a_later_chunk_names_its_row(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{0.5 if i == 7 else 1}" for i in range(10))
    path = write(tmp_path, "d.csv", f"a,label\n{rows}\n")
    for check in (read_dataset, inspect_dataset):
        with pytest.raises(DatasetError, match=r"CSV row 8, column 'label': label 0\.5"):
            check(path, "d.csv")


@pytest.mark.parametrize(
    "lines",
    [
        [{"a": i, "b": -i, "label": i % 3} for i in range(8)],
        [{"x": [[i, 1], [2, 3]]} for i in range(7)],
        [{"text": f"t{i}", "label": 5} for i in range(4)],
    ],
)
def test_jsonl_inspect_agrees_with_read(tmp_path: Path, lines: list[dict[str, object]]) -> None:
    path = jsonl(tmp_path, lines)
    info = inspect_dataset(path, "d.jsonl")
    ds = read_text_dataset(path, "d.jsonl") if info.kind == "text" else read_dataset(path, "d.jsonl")
    assert info == DatasetInfo.of(ds, "jsonl")


def test_jsonl_inspect_checks_float32_range_in_a_later_chunk(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [{"a": 1.0}] * 5 + [{"a": 1e39}])
    with pytest.raises(DatasetError, match="too large for float32"):
        inspect_dataset(path, "d.jsonl")


@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_inspect_agrees_with_read(tmp_path: Path, order: str) -> None:
    x = np.asarray(np.arange(7 * 3 * 2, dtype=np.float64).reshape(7, 3, 2), order=order)
    path = npz(tmp_path, x=x, y=np.arange(7) % 3)
    assert inspect_dataset(path, "d.npz") == DatasetInfo.of(read_dataset(path, "d.npz"), "npz")


@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_nan_names_its_example_whatever_the_memory_order(tmp_path: Path, order: str) -> None:
    x = np.ones((6, 4))
    x[4, 2] = np.nan
    path = npz(tmp_path, x=np.asarray(x, order=order))
    for check in (read_dataset, inspect_dataset):
        with pytest.raises(DatasetError, match="first in example 4"):
            check(path, "d.npz")


def test_npz_labels_are_checked_in_every_chunk(tmp_path: Path) -> None:
    y = np.zeros(30)
    y[25] = 2.5
    path = npz(tmp_path, x=np.ones((30, 2)), y=y)
    with pytest.raises(DatasetError, match=r"y\[25\]: label 2.5"):
        inspect_dataset(path, "d.npz")


def bomb(path: Path, rows: int, cols: int = 1024) -> Path:
    """An NPZ whose ``x`` is ``rows x cols`` float32 zeros, deflated: tiny on disk, large inflated."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)}
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        np.lib.format.write_array_header_1_0(f, header)
        zeros = bytes(cols * 4 * 256)
        for _ in range(rows // 256):
            f.write(zeros)
    return path


def test_npz_over_the_array_limit_is_refused_before_inflating(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.npz", rows=1024)  # 4 MiB inflated
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(DatasetError, match="expand to 4,194,"):
        inspect_dataset(path, "bomb.npz", max_array_bytes=1024**2)
    info = inspect_dataset(path, "bomb.npz", max_array_bytes=8 * 1024**2)
    assert info.examples == 1024 and info.input_shape == [1024]


def test_npz_with_an_absurd_compression_ratio_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(npz_reader, "RATIO_FLOOR", 1024)
    path = bomb(tmp_path / "bomb.npz", rows=1024)
    with pytest.raises(DatasetError, match=r"inflates .* times over"):
        inspect_dataset(path, "bomb.npz")
    with pytest.raises(DatasetError, match=r"inflates .* times over"):
        read_dataset(path, "bomb.npz")


def test_npz_header_claiming_more_than_its_entry_holds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("x.npy", "w") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (1_000_000, 1000)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(bytes(64))
    with pytest.raises(DatasetError, match="declares shape"):
        inspect_dataset(path, "liar.npz")


@pytest.mark.parametrize(
    "columns",
    [
        {"a": [float(i) for i in range(10)], "b": list(range(10)), "label": [i % 4 for i in range(10)]},
        {"x": [[[i, 1.0], [2.0, 3.0]] for i in range(9)], "label": [7] * 9},
        {"text": [f"t{i}" for i in range(8)]},
    ],
)
def test_parquet_inspect_agrees_with_read_across_batches(tmp_path: Path, columns: dict[str, Any]) -> None:
    path = parquet(tmp_path, columns, row_group_size=4)
    info = inspect_dataset(path, "d.parquet")
    ds = read_text_dataset(path, "d.parquet") if info.kind == "text" else read_dataset(path, "d.parquet")
    assert info == DatasetInfo.of(ds, "parquet")


def test_parquet_errors_in_a_later_batch_name_their_row(tmp_path: Path) -> None:
    labels = [0.0] * 10
    labels[8] = 1.5
    path = parquet(tmp_path, {"a": [1.0] * 10, "label": labels})
    for check in (read_dataset, inspect_dataset):
        with pytest.raises(DatasetError, match=r"column 'label', row 9: label 1\.5"):
            check(path, "d.parquet")
    ragged = parquet(tmp_path, {"x": [[1.0, 2.0]] * 7 + [[1.0]]}, name="r.parquet")
    for check in (read_dataset, inspect_dataset):
        with pytest.raises(DatasetError, match="ragged: row 8"):
            check(ragged, "r.parquet")
