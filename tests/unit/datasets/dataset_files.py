"""Dataset files for the dataset tests, written the way users make them (shared by every test module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


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


def parquet(tmp_path: Path, columns: dict[str, Any], name: str = "d.parquet", **kw: Any) -> Path:
    path = tmp_path / name
    pq.write_table(pa.table(columns), path, **kw)
    return path


def jsonl(tmp_path: Path, lines: list[Any], name: str = "d.jsonl") -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return write(tmp_path, name, text)
