"""CSV datasets: a header row naming the columns, then one example per row.

An optional ``label`` column holds integer class indices (``>= 0``); every other column is a numeric
feature, so an example is a vector. At most :data:`distill.datasets.types.MAX_CELLS` values.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import check_labels, to_float32
from distill.datasets.types import LABEL_COLUMN, ArrayDataset, DatasetError


def read(path: Path, filename: str) -> ArrayDataset:
    """Read and validate a CSV dataset (a header row, then one example per row)."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            return _parse_csv(csv.reader(f), filename)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{filename!r}: the CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8 CSV"
        ) from exc
    except csv.Error as exc:
        raise DatasetError(f"{filename!r}: malformed CSV: {exc}") from exc


def _parse_csv(reader: Any, filename: str) -> ArrayDataset:
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

    features: list[list[float]] = []
    labels: list[float] = []
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
        if label_col is not None:
            labels.append(values[label_col])
        features.append([values[i] for i in feature_cols])

    if not features:
        raise DatasetError(f"{filename!r}: the CSV has a header but no data rows; add one row per example")
    x = np.asarray(features, dtype=np.float64)
    y = None
    if label_col is not None:
        y = check_labels(
            np.asarray(labels, dtype=np.float64), filename, where="CSV row {row}, column 'label'"
        )
    return ArrayDataset(to_float32(x, filename), y)


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
