"""CSV datasets: a header row naming the columns, then one example per row.

An optional ``label`` column holds integer class indices (``>= 0``); every other column is a numeric
feature, so an example is a vector. At most :data:`distill.datasets.types.MAX_CELLS` values.

Rows are read one at a time and checked :data:`CHUNK_ROWS` at a time; :func:`read` keeps the float32
chunks (the worker trains on them), :func:`inspect` (the API, on an upload) keeps only counts, so its
memory does not grow with the file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import check_labels, to_float32
from distill.datasets.types import LABEL_COLUMN, ArrayDataset, DatasetError, DatasetInfo

CHUNK_ROWS = 4096


def read(path: Path, filename: str) -> ArrayDataset:
    """Read and validate a CSV dataset (a header row, then one example per row)."""
    found = _read(path, filename, keep=True)
    assert isinstance(found, ArrayDataset)
    return found


def inspect(path: Path, filename: str) -> DatasetInfo:
    """Validate a CSV dataset as :func:`read` does, holding only one chunk of rows, and describe it."""
    found = _read(path, filename, keep=False)
    assert isinstance(found, DatasetInfo)
    return found


def _read(path: Path, filename: str, keep: bool) -> ArrayDataset | DatasetInfo:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            return _parse_csv(csv.reader(f), filename, keep)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{filename!r}: the CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV"
        ) from exc
    except csv.Error as exc:
        raise DatasetError(f"{filename!r}: malformed CSV: {exc}") from exc


class _Chunks:
    """Rows checked a chunk at a time: float32 range and labels; kept only when ``keep``."""

    def __init__(self, filename: str, keep: bool) -> None:
        self.filename = filename
        self.keep = keep
        self.features: list[list[float]] = []
        self.labels: list[float] = []
        self.x_parts: list[np.ndarray] = []
        self.y_parts: list[np.ndarray] = []
        self.rows = 0
        self.top_label = -1

    def add(self, features: list[float], label: float | None) -> None:
        self.features.append(features)
        if label is not None:
            self.labels.append(label)
        if len(self.features) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.features:
            return
        x = to_float32(np.asarray(self.features, dtype=np.float64), self.filename)
        if self.labels:
            y = check_labels(
                np.asarray(self.labels, dtype=np.float64),
                self.filename,
                where="CSV row {row}, column 'label'",
                offset=self.rows,
            )
            self.top_label = max(self.top_label, int(y.max()))
            if self.keep:
                self.y_parts.append(y)
        if self.keep:
            self.x_parts.append(x)
        self.rows += len(self.features)
        self.features, self.labels = [], []


def _parse_csv(reader: Any, filename: str, keep: bool) -> ArrayDataset | DatasetInfo:
    header: list[str] | None = None
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            break
    if header is None:
        raise DatasetError(
            f"{filename!r}: the CSV has no rows; it needs a header row, then one row per example"
        )
    _check_header(header, filename)

    label_cols = [i for i, name in enumerate(header) if name.lower() == LABEL_COLUMN]
    if len(label_cols) > 1:
        raise DatasetError(f"{filename!r}: the CSV header has {len(label_cols)} 'label' columns; keep one")
    label_col = label_cols[0] if label_cols else None
    feature_cols = [i for i in range(len(header)) if i != label_col]
    if not feature_cols:
        raise DatasetError(
            f"{filename!r}: the CSV has no feature columns (only 'label'); add numeric feature columns"
        )

    chunks = _Chunks(filename, keep)
    row_no = 0
    cells = 0
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # blank lines (e.g. a trailing newline)
        row_no += 1
        where = f"{filename!r}: CSV row {row_no} (line {line})"
        if len(row) != len(header):
            raise DatasetError(
                f"{where} has {len(row)} values but the header has {len(header)} columns; "
                "every row needs one value per column"
            )
        cells += len(row)
        if cells > types.MAX_CELLS:
            raise DatasetError(
                f"{where}: the CSV passes {types.MAX_CELLS:,} cells, the most allowed; upload fewer examples "
                "or features"
            )
        values = [_parse_number(row[i], where, header[i]) for i in range(len(row))]
        chunks.add([values[i] for i in feature_cols], None if label_col is None else values[label_col])
    chunks.flush()

    if chunks.rows == 0:
        raise DatasetError(f"{filename!r}: the CSV has a header but no data rows; add one row per example")
    if not keep:
        return DatasetInfo(
            format="csv",
            examples=chunks.rows,
            input_shape=[len(feature_cols)],
            num_classes=None if label_col is None else chunks.top_label + 1,
            has_labels=label_col is not None,
        )
    x = np.concatenate(chunks.x_parts)
    y = None if label_col is None else np.concatenate(chunks.y_parts)
    return ArrayDataset(x, y)


def _check_header(header: list[str], filename: str) -> None:
    if all(_is_number(name) for name in header):
        raise DatasetError(
            f"{filename!r}: the first CSV row must be a header naming the columns "
            "(e.g. x0,x1,...,label), but it holds only numbers; add a header row"
        )
    for i, name in enumerate(header):
        if not name:
            raise DatasetError(f"{filename!r}: CSV header column {i + 1} has no name; name every column")
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DatasetError(f"{filename!r}: CSV header names column {name!r} twice; make names unique")
        seen.add(name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_number(cell: str, where: str, column: str) -> float:
    text = cell.strip()
    if not text:
        raise DatasetError(f"{where}, column {column!r} is empty; every cell needs a number")
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{where}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(
            f"{where}, column {column!r}: {text!r} is not a finite number; remove NaN/inf values"
        )
    return value
