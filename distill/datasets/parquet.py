"""Parquet datasets (``.parquet``/``.pq``): numeric columns, one list column ``x``, or a ``text`` column.

Either columns as for CSV (an optional ``label``, every other column numeric), or one list column ``x``
(lists of numbers, or nested lists for 2-D/3-D inputs, every example of the same shape) plus an optional
``label``, or a string column ``text`` plus an optional ``label`` (a text dataset). pyarrow is imported
only when a Parquet file is read.

:func:`inspect` (the API, on an upload) checks the same things a batch of rows at a time (about
:data:`BATCH_CELLS` values), keeping only counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import check_labels, to_float32, too_long_text
from distill.datasets.types import (
    ARRAY_COLUMN,
    LABEL_COLUMN,
    TEXT_COLUMN,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    TextDataset,
)

BATCH_CELLS = 1 << 20


def read(path: Path, filename: str) -> ArrayDataset | TextDataset:
    """Read and validate a Parquet dataset (numeric columns, a list column ``x``, or a ``text`` column)."""
    import pyarrow as pa

    try:
        table = _open(path, filename).read()
    except DatasetError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(
            f"{filename!r}: cannot read the Parquet file ({exc}); re-write it with pyarrow or pandas"
        ) from exc
    return _parquet_table(table, filename)


def inspect(path: Path, filename: str) -> DatasetInfo:
    """Validate a Parquet dataset as :func:`read` does, a batch of rows at a time, and describe it."""
    import pyarrow as pa

    try:
        pf = _open(path, filename)
        meta = pf.metadata
        per_row = max(1, _cells(meta) // max(meta.num_rows, 1))
        rows, top, first = 0, -1, None
        for batch in pf.iter_batches(batch_size=max(1, BATCH_CELLS // per_row)):
            part = _parquet_table(pa.Table.from_batches([batch]), filename, offset=rows)
            shape = part.input_shape
            if first is None:
                first = part
            elif shape != first.input_shape:
                raise DatasetError(
                    f"{filename!r}: Parquet column {ARRAY_COLUMN!r} is ragged: row {rows + 1} has shape "
                    f"{shape} where row 1 has {first.input_shape}; every example needs the same shape"
                )
            if part.y is not None and len(part.y):
                top = max(top, int(part.y.max()))
            rows += len(part)
    except DatasetError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(
            f"{filename!r}: cannot read the Parquet file ({exc}); re-write it with pyarrow or pandas"
        ) from exc
    assert first is not None  # _open refuses a file without rows
    return DatasetInfo(
        format="parquet",
        examples=rows,
        input_shape=first.input_shape,
        num_classes=top + 1 if first.y is not None else None,
        has_labels=first.y is not None,
        kind="text" if isinstance(first, TextDataset) else "tabular",
    )


def _cells(meta: Any) -> int:
    return sum(
        meta.row_group(g).column(c).num_values
        for g in range(meta.num_row_groups)
        for c in range(meta.num_columns)
    )


def _open(path: Path, filename: str) -> Any:
    """The Parquet file, its size checked from the metadata alone."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    meta = pf.metadata
    cells = _cells(meta)
    if cells > types.MAX_CELLS:
        raise DatasetError(
            f"{filename!r}: the Parquet file holds {cells:,} values, more than the {types.MAX_CELLS:,} "
            "allowed; upload fewer examples or smaller inputs"
        )
    if meta.num_rows == 0:
        raise DatasetError(f"{filename!r}: the Parquet file has no rows; add one row per example")
    return pf


def _parquet_table(table: Any, filename: str, offset: int = 0) -> ArrayDataset | TextDataset:
    """``offset``: the row of ``table``'s first row in the file (for messages, when read in batches)."""
    import pyarrow as pa

    names: list[str] = list(table.column_names)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"{filename!r}: Parquet column {name!r} appears twice; make names unique")
        seen.add(name)
    label_names = [name for name in names if name.lower() == LABEL_COLUMN]
    if len(label_names) > 1:
        raise DatasetError(f"{filename!r}: the Parquet file has {len(label_names)} 'label' columns; keep one")
    label_name = label_names[0] if label_names else None
    features = [name for name in names if name != label_name]
    y = (
        None
        if label_name is None
        else _parquet_labels(table.column(label_name), label_name, filename, offset)
    )

    types = {name: table.schema.field(name).type for name in names}
    if TEXT_COLUMN in features and (
        pa.types.is_string(types[TEXT_COLUMN]) or pa.types.is_large_string(types[TEXT_COLUMN])
    ):
        _only_column(TEXT_COLUMN, features, filename)
        return TextDataset(_parquet_texts(table.column(TEXT_COLUMN), filename, offset), y)
    if ARRAY_COLUMN in features and _is_list_type(types[ARRAY_COLUMN]):
        _only_column(ARRAY_COLUMN, features, filename)
        x = _parquet_array(table.column(ARRAY_COLUMN), filename, offset)
        return ArrayDataset(to_float32(x, filename), y)

    if not features:
        raise DatasetError(
            f"{filename!r}: the Parquet file has no feature columns (only 'label'); add numeric columns"
        )
    x = np.empty((table.num_rows, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        kind = types[name]
        if _is_list_type(kind):
            raise DatasetError(
                f"{filename!r}: Parquet column {name!r} holds lists; put array inputs in one list column "
                f"named {ARRAY_COLUMN!r} (plus an optional 'label'), or one number per column"
            )
        x[:, j] = _parquet_numbers(table.column(name), f"Parquet column {name!r}", filename, offset=offset)
    return ArrayDataset(to_float32(x, filename), y)


def _is_list_type(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))


def _only_column(main: str, features: list[str], filename: str) -> None:
    others = [name for name in features if name != main]
    if others:
        raise DatasetError(
            f"{filename!r}: with a {main!r} column the only other column allowed is 'label', but the "
            f"Parquet file also has {others}; drop them"
        )


def _first_null_row(column: Any) -> int | None:
    if column.null_count == 0:
        return None
    mask = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return int(np.flatnonzero(mask)[0])


def _parquet_numbers(column: Any, where: str, filename: str, per_row: int = 1, offset: int = 0) -> np.ndarray:
    """A numeric Parquet column -> float64 values, or a DatasetError naming the row of the first bad one.

    ``per_row``: values per row (for the flattened values of a list column).
    """
    import pyarrow as pa

    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise DatasetError(
            f"{filename!r}: {where} has type {kind}; it must hold numbers (integers or floats)"
        )
    null = _first_null_row(column)
    if null is not None:
        raise DatasetError(
            f"{filename!r}: {where}, row {offset + null // per_row + 1} has a null; every cell needs a number"
        )
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DatasetError(
            f"{filename!r}: {where}, row {offset + i // per_row + 1}: {values[i]} is not a finite number; "
            "remove "
            "NaN/inf values"
        )
    return values


def _parquet_labels(column: Any, name: str, filename: str, offset: int = 0) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DatasetError(
            f"{filename!r}: Parquet column {name!r} has type {column.type}; labels must be integer class "
            "indices (0, 1, 2, ...)"
        )
    null = _first_null_row(column)
    if null is not None:
        raise DatasetError(
            f"{filename!r}: Parquet column {name!r}, row {offset + null + 1} is null; label every example or "
            "drop the "
            "column"
        )
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return check_labels(values, filename, where=f"Parquet column {name!r}, row {{row}}", offset=offset)


def _parquet_array(column: Any, filename: str, offset: int = 0) -> np.ndarray:
    """A list column ``x`` -> ``[n, *shape]`` float64, checking every example has the same shape."""
    import pyarrow.compute as pc

    level = column.combine_chunks()
    n = len(level)
    shape: list[int] = []
    where = f"Parquet column {ARRAY_COLUMN!r}"
    while _is_list_type(level.type):
        per_row = math.prod(shape)  # list entries per example at this depth
        null = _first_null_row(level)
        if null is not None:
            raise DatasetError(
                f"{filename!r}: {where}, row {offset + null // per_row + 1} has a null list; every example "
                "needs "
                "numbers"
            )
        lengths = np.asarray(pc.list_value_length(level).to_numpy(zero_copy_only=False), dtype=np.int64)
        first = int(lengths[0])
        bad = np.flatnonzero(lengths != first)
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{filename!r}: {where} is ragged: row {offset + i // per_row + 1} has a list of "
                f"{int(lengths[i])} "
                f"values at depth {len(shape) + 1} where row 1 has {first}; every example needs the same "
                "shape"
            )
        if first == 0:
            raise DatasetError(f"{filename!r}: {where} holds empty lists; every example needs numbers")
        shape.append(first)
        level = level.flatten()
    if not 1 <= len(shape) <= 3:
        raise DatasetError(
            f"{filename!r}: {where} has {len(shape)} levels of lists; an example must have 1 to 3 dims"
        )
    per_example = math.prod(shape)
    values = _parquet_numbers(level, where, filename, per_row=per_example, offset=offset)
    if values.size != n * per_example:  # cannot happen for lists checked above; a guard
        raise DatasetError(f"{filename!r}: {where} has an inconsistent number of values")
    try:
        return values.reshape(n, *shape)
    except ValueError as exc:  # pragma: no cover - guarded above
        raise DatasetError(f"{filename!r}: {where} cannot be shaped as [{n}, {shape}]") from exc


def _parquet_texts(column: Any, filename: str, offset: int = 0) -> list[str]:
    import pyarrow.compute as pc

    where = f"Parquet column {TEXT_COLUMN!r}"
    null = _first_null_row(column)
    if null is not None:
        raise DatasetError(
            f"{filename!r}: {where}, row {offset + null + 1} is null; every example needs a text"
        )
    lengths = np.asarray(pc.utf8_length(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    too_long = np.flatnonzero(lengths > types.MAX_TEXT_CHARS)
    if too_long.size:
        i = int(too_long[0])
        raise DatasetError(too_long_text(f"{filename!r}: {where}, row {offset + i + 1}", int(lengths[i])))
    return [str(t) for t in column.to_pylist()]
