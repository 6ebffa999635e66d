"""Dataset files: read and validate an uploaded CSV, NPZ, Parquet or JSONL file into arrays or texts.

NumPy only (no torch): the API imports this module to validate uploads before it accepts them. pyarrow (for
Parquet) is imported only when a Parquet file is read.

Formats:

* **CSV**: a header row naming the columns, then one example per row. An optional ``label`` column holds
  integer class indices (``>= 0``); every other column is a numeric feature, so an example is a vector.
* **NPZ** (``np.savez``): an array ``x`` of shape ``[n, ...]`` (2-D to 4-D: up to 3 dims per example) and an
  optional ``y`` of ``n`` integer class indices. Loaded with ``allow_pickle=False``: user bytes are never
  unpickled.
* **Parquet** (``.parquet``/``.pq``): either columns as for CSV (an optional ``label``, every other column
  numeric), or one list column ``x`` (lists of numbers, or nested lists for 2-D/3-D inputs, every example of
  the same shape) plus an optional ``label``, or a string column ``text`` plus an optional ``label``.
* **JSONL** (``.jsonl``/``.ndjson``): one JSON object per line, of one of three kinds, the same on every line:
  ``{"a": 1.5, "b": 2, "label": 0}`` (numeric fields, as CSV columns), ``{"x": [[0, 1], [2, 3]], "label": 4}``
  (an array input) or ``{"text": "...", "label": 1}`` (a text example).

Numeric files read as an :class:`ArrayDataset` (:func:`read_dataset`); files of texts (a ``text`` field or
column) are *text datasets* (``DatasetInfo.kind == "text"``) and read as a :class:`TextDataset`
(:func:`read_text_dataset`), so that ``ArrayDataset.x`` is always a float32 array. :func:`inspect_dataset`
describes either kind.

Limits: at most :data:`MAX_CELLS` values (cells, labels included) in a CSV, Parquet or JSONL file, and at most
:data:`MAX_TEXT_CHARS` characters in one text.

Every problem raises :class:`DatasetError` whose message says what is wrong, where (row, line or column) and
how to fix it.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

FORMATS = ("csv", "npz", "parquet", "jsonl")
KINDS = ("tabular", "text")
DatasetKind = Literal["tabular", "text"]
LABEL_COLUMN = "label"
ARRAY_COLUMN = "x"
TEXT_COLUMN = "text"
MAX_CLASSES = 100_000
"""A label of ``MAX_CLASSES`` or more is almost surely a mistake (an id or a value, not a class index)."""
MAX_ARRAY_BYTES = 8 * 1024**3
"""The most bytes that the arrays of an NPZ may expand to (guards against zip bombs)."""
MAX_CELLS = 50_000_000
"""The most values (cells, labels included) that a CSV, Parquet or JSONL dataset may hold."""
MAX_TEXT_CHARS = 100_000
"""The most characters in one text of a text dataset."""
MAX_LINE_CHARS = 128 * 1024**2
"""The longest JSONL line read (a guard: no valid example comes near it)."""

_EXTENSIONS = {
    ".csv": "csv",
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PARQUET_MAGIC = b"PAR1"
_SNIFF_BYTES = 64 * 1024
_UPLOAD_HINT = "upload a CSV (header row), an NPZ, a Parquet file or a JSONL file"


class DatasetError(ValueError):
    """A dataset file that cannot be used; the message says what is wrong and how to fix it."""


@dataclass
class ArrayDataset:
    """Examples: ``x`` float32 ``[n, *input_shape]``; ``y`` int64 ``[n]`` or ``None`` (no labels)."""

    x: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> list[int]:
        return [int(d) for d in self.x.shape[1:]]

    @property
    def num_classes(self) -> int | None:
        """``max(y) + 1``, or ``None`` without labels."""
        if self.y is None or len(self.y) == 0:
            return None
        return int(self.y.max()) + 1

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.x[indices], None if self.y is None else self.y[indices])


@dataclass
class TextDataset:
    """Text examples: ``texts`` (one ``str`` each); ``y`` int64 ``[n]`` or ``None`` (no labels)."""

    texts: list[str]
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def input_shape(self) -> list[int]:
        """``[]``: a text has no fixed shape."""
        return []

    @property
    def num_classes(self) -> int | None:
        """``max(y) + 1``, or ``None`` without labels."""
        if self.y is None or len(self.y) == 0:
            return None
        return int(self.y.max()) + 1

    def subset(self, indices: np.ndarray) -> TextDataset:
        texts = [self.texts[int(i)] for i in np.asarray(indices).reshape(-1)]
        return TextDataset(texts, None if self.y is None else self.y[indices])


@dataclass
class DatasetInfo:
    """What the API records about a dataset (``files.meta``) and checks job specs against.

    ``kind`` is ``"tabular"`` (numeric inputs of shape ``input_shape``) or ``"text"`` (``input_shape`` is
    ``[]``); metadata recorded before ``kind`` existed reads as ``"tabular"``.
    """

    format: str
    examples: int
    input_shape: list[int]
    num_classes: int | None
    has_labels: bool
    kind: DatasetKind = "tabular"

    def to_meta(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "examples": self.examples,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "has_labels": self.has_labels,
            "kind": self.kind,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DatasetInfo:
        try:
            num_classes = meta["num_classes"]
            kind = meta.get("kind", "tabular")
            if kind not in KINDS:
                raise ValueError(f"unknown dataset kind {kind!r}")
            return cls(
                format=str(meta["format"]),
                examples=int(meta["examples"]),
                input_shape=[int(d) for d in meta["input_shape"]],
                num_classes=None if num_classes is None else int(num_classes),
                has_labels=bool(meta["has_labels"]),
                kind="text" if kind == "text" else "tabular",
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"dataset metadata is incomplete or invalid ({exc!r}): {meta!r}") from exc

    @classmethod
    def of(cls, ds: ArrayDataset | TextDataset, format: str) -> DatasetInfo:
        return cls(
            format=format,
            examples=len(ds),
            input_shape=ds.input_shape,
            num_classes=ds.num_classes,
            has_labels=ds.y is not None,
            kind="text" if isinstance(ds, TextDataset) else "tabular",
        )


BUILTIN_INFO: dict[str, DatasetInfo] = {
    # sklearn.datasets.load_digits: 8x8 grey images of handwritten digits.
    "digits": DatasetInfo(
        format="builtin", examples=1797, input_shape=[8, 8], num_classes=10, has_labels=True
    ),
    # mnist1d defaults: 4000 train + 1000 test sequences of length 40.
    "mnist1d": DatasetInfo(
        format="builtin", examples=5000, input_shape=[40], num_classes=10, has_labels=True
    ),
}


def detect_format(path: Path, filename: str) -> str:
    """One of :data:`FORMATS`: by the extension of ``filename``, else by sniffing the first bytes."""
    fmt = _EXTENSIONS.get(Path(filename).suffix.lower())
    if fmt is not None:
        return fmt
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        raise DatasetError(f"{filename!r}: the file is empty; {_UPLOAD_HINT}")
    if head.startswith(_ZIP_MAGICS):
        return "npz"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    _reject_known_binary(head, filename)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is fine.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
    start = text.lstrip("\ufeff \t\r\n")
    if start.startswith("{"):
        return "jsonl"
    if start.startswith("["):
        raise DatasetError(
            f"{filename!r} looks like a JSON array; write JSON Lines instead (one JSON object per line, "
            'e.g. {"x": [0.5, 1.0], "label": 2}) and name the file .jsonl'
        )
    if text and "\x00" not in text and ("," in text or "\n" in text):
        return "csv"
    raise DatasetError(
        f"{filename!r}: unknown dataset format; upload a .csv (header row, optional 'label' column), "
        "an .npz made with np.savez(path, x=..., y=...), a .parquet or a .jsonl file"
    )


def read_dataset(path: Path, filename: str) -> ArrayDataset:
    """Read and validate a numeric dataset file; ``filename`` (the uploaded name) picks the format.

    A text dataset (``text`` field or column) raises :class:`DatasetError`: read it with
    :func:`read_text_dataset`.
    """
    ds, _ = _read(path, filename)
    if isinstance(ds, TextDataset):
        raise DatasetError(
            f"{filename!r} is a text dataset (its examples are strings in {TEXT_COLUMN!r}), not numeric "
            "inputs; use it where text is expected, or upload numeric inputs"
        )
    return ds


def read_text_dataset(path: Path, filename: str) -> TextDataset:
    """Read and validate a text dataset file (JSONL lines or a Parquet column ``text``)."""
    ds, _ = _read(path, filename)
    if not isinstance(ds, TextDataset):
        raise DatasetError(
            f"{filename!r} holds numeric inputs, not texts; a text dataset needs a {TEXT_COLUMN!r} field "
            'on every line (e.g. {"text": "...", "label": 0}) or a string column named "text"'
        )
    return ds


def inspect_dataset(path: Path, filename: str) -> DatasetInfo:
    """Read and fully validate a dataset file (numeric or text), and describe it."""
    ds, fmt = _read(path, filename)
    return DatasetInfo.of(ds, fmt)


def _read(path: Path, filename: str) -> tuple[ArrayDataset | TextDataset, str]:
    if path.stat().st_size == 0:
        raise DatasetError(f"{filename!r}: the file is empty; {_UPLOAD_HINT}")
    fmt = detect_format(path, filename)
    if fmt == "csv":
        return _read_csv(path, filename), fmt
    if fmt == "parquet":
        return _read_parquet(path, filename), fmt
    if fmt == "jsonl":
        return _read_jsonl(path, filename), fmt
    return _read_npz(path, filename), fmt


# --- CSV --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, filename: str) -> ArrayDataset:
    with path.open("rb") as fb:
        head = fb.read(8)
    if head.startswith(_ZIP_MAGICS):
        raise DatasetError(
            f"{filename!r} is named .csv but is a zip archive; if it is an NPZ, upload it with a .npz name"
        )
    _reject_parquet(head, filename, "csv")
    _reject_known_binary(head, filename)
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
        if cells > MAX_CELLS:
            raise DatasetError(
                f"{where}: the CSV passes {MAX_CELLS:,} cells, the most allowed; upload fewer examples or "
                "features"
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
        y = _check_labels(
            np.asarray(labels, dtype=np.float64), filename, where="CSV row {row}, column 'label'"
        )
    return ArrayDataset(_to_float32(x, filename), y)


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


# --- NPZ --------------------------------------------------------------------------------------------------


def _read_npz(path: Path, filename: str) -> ArrayDataset:
    with path.open("rb") as fb:
        head = fb.read(8)
    if head.startswith(_NPY_MAGIC):
        raise DatasetError(
            f"{filename!r} is a single .npy array, not an .npz archive; "
            "save with np.savez(path, x=inputs, y=labels)"
        )
    if not head.startswith(_ZIP_MAGICS):
        _reject_parquet(head, filename, "npz")
        _reject_known_binary(head, filename)
        raise DatasetError(
            f"{filename!r} is not an NPZ (zip) archive; save it with np.savez(path, x=inputs, y=labels)"
        )
    _check_npz_sizes(path, filename)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if "x" not in names:
                raise DatasetError(
                    f"{filename!r}: the NPZ has no array named 'x' (it has {names}); "
                    "save with np.savez(path, x=inputs, y=labels)"
                )
            x = _load_member(npz, "x", filename)
            y = _load_member(npz, "y", filename) if "y" in names else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{filename!r}: cannot read the NPZ ({exc}); re-save it with np.savez") from exc
    return _check_npz_arrays(x, y, filename)


def _check_npz_sizes(path: Path, filename: str) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"{filename!r}: the NPZ is not a valid zip archive ({exc}); re-save it") from exc
    if total > MAX_ARRAY_BYTES:
        raise DatasetError(
            f"{filename!r}: the NPZ's arrays expand to {total} bytes, more than the {MAX_ARRAY_BYTES} allowed"
        )


def _load_member(npz: Any, name: str, filename: str) -> np.ndarray:
    try:
        arr = npz[name]
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(
                f"{filename!r}: NPZ array {name!r} is an object array, which would need unpickling; "
                "store numbers only (e.g. np.asarray(values, dtype=np.float32))"
            ) from exc
        raise
    if not isinstance(arr, np.ndarray):
        raise DatasetError(f"{filename!r}: NPZ member {name!r} is not an array")
    return arr


def _check_npz_arrays(x: np.ndarray, y: np.ndarray | None, filename: str) -> ArrayDataset:
    if x.dtype.kind not in "biuf":
        raise DatasetError(
            f"{filename!r}: NPZ array 'x' has dtype {x.dtype}; it must hold real numbers (e.g. float32)"
        )
    if not 2 <= x.ndim <= 4:
        raise DatasetError(
            f"{filename!r}: NPZ array 'x' has shape {list(x.shape)}; it must be [examples, ...] with 1 to 3 "
            "dims per example (2-D to 4-D)"
        )
    if x.shape[0] == 0:
        raise DatasetError(f"{filename!r}: NPZ array 'x' has zero examples (shape {list(x.shape)})")
    if any(d == 0 for d in x.shape[1:]):
        raise DatasetError(
            f"{filename!r}: NPZ array 'x' has zero features per example (shape {list(x.shape)})"
        )
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DatasetError(
            f"{filename!r}: NPZ array 'x' has NaN or infinite values (first in example {bad}); remove them"
        )
    if y is not None:
        if y.ndim != 1:
            raise DatasetError(
                f"{filename!r}: NPZ array 'y' has shape {list(y.shape)}; it must be 1-D: one class index "
                "per example"
            )
        if len(y) != len(x):
            raise DatasetError(
                f"{filename!r}: NPZ arrays 'x' and 'y' differ in length "
                f"({len(x)} examples, {len(y)} labels); give one label per example"
            )
        if y.dtype.kind not in "biuf":
            raise DatasetError(
                f"{filename!r}: NPZ array 'y' has dtype {y.dtype}; labels must be integer class indices"
            )
        y = _check_labels(y.astype(np.float64), filename, where="NPZ y[{index}]")
    return ArrayDataset(_to_float32(x, filename), y)


# --- Parquet ----------------------------------------------------------------------------------------------


def _read_parquet(path: Path, filename: str) -> ArrayDataset | TextDataset:
    with path.open("rb") as fb:
        head = fb.read(8)
    if not head.startswith(_PARQUET_MAGIC):
        if head.startswith(_ZIP_MAGICS):
            raise DatasetError(
                f"{filename!r} is named .parquet but is a zip archive; if it is an NPZ, upload it with a "
                ".npz name"
            )
        _reject_known_binary(head, filename)
        raise DatasetError(
            f"{filename!r} is not a Parquet file (it does not start with 'PAR1'); write it with "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"
        )
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        meta = pf.metadata
        cells = sum(
            meta.row_group(g).column(c).num_values
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
        if cells > MAX_CELLS:
            raise DatasetError(
                f"{filename!r}: the Parquet file holds {cells:,} values, more than the {MAX_CELLS:,} "
                "allowed; upload fewer examples or smaller inputs"
            )
        if meta.num_rows == 0:
            raise DatasetError(f"{filename!r}: the Parquet file has no rows; add one row per example")
        table = pf.read()
    except DatasetError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(
            f"{filename!r}: cannot read the Parquet file ({exc}); re-write it with pyarrow or pandas"
        ) from exc
    return _parquet_table(table, filename)


def _parquet_table(table: Any, filename: str) -> ArrayDataset | TextDataset:
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
    y = None if label_name is None else _parquet_labels(table.column(label_name), label_name, filename)

    types = {name: table.schema.field(name).type for name in names}
    if TEXT_COLUMN in features and (
        pa.types.is_string(types[TEXT_COLUMN]) or pa.types.is_large_string(types[TEXT_COLUMN])
    ):
        _only_column(TEXT_COLUMN, features, filename)
        return TextDataset(_parquet_texts(table.column(TEXT_COLUMN), filename), y)
    if ARRAY_COLUMN in features and _is_list_type(types[ARRAY_COLUMN]):
        _only_column(ARRAY_COLUMN, features, filename)
        x = _parquet_array(table.column(ARRAY_COLUMN), filename)
        return ArrayDataset(_to_float32(x, filename), y)

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
        x[:, j] = _parquet_numbers(table.column(name), f"Parquet column {name!r}", filename)
    return ArrayDataset(_to_float32(x, filename), y)


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


def _parquet_numbers(column: Any, where: str, filename: str, per_row: int = 1) -> np.ndarray:
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
            f"{filename!r}: {where}, row {null // per_row + 1} has a null; every cell needs a number"
        )
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.argmin(finite))
        raise DatasetError(
            f"{filename!r}: {where}, row {i // per_row + 1}: {values[i]} is not a finite number; remove "
            "NaN/inf values"
        )
    return values


def _parquet_labels(column: Any, name: str, filename: str) -> np.ndarray:
    import pyarrow as pa

    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DatasetError(
            f"{filename!r}: Parquet column {name!r} has type {column.type}; labels must be integer class "
            "indices (0, 1, 2, ...)"
        )
    null = _first_null_row(column)
    if null is not None:
        raise DatasetError(
            f"{filename!r}: Parquet column {name!r}, row {null + 1} is null; label every example or drop the "
            "column"
        )
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
    return _check_labels(values, filename, where=f"Parquet column {name!r}, row {{row}}")


def _parquet_array(column: Any, filename: str) -> np.ndarray:
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
                f"{filename!r}: {where}, row {null // per_row + 1} has a null list; every example needs "
                "numbers"
            )
        lengths = np.asarray(pc.list_value_length(level).to_numpy(zero_copy_only=False), dtype=np.int64)
        first = int(lengths[0])
        bad = np.flatnonzero(lengths != first)
        if bad.size:
            i = int(bad[0])
            raise DatasetError(
                f"{filename!r}: {where} is ragged: row {i // per_row + 1} has a list of {int(lengths[i])} "
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
    values = _parquet_numbers(level, where, filename, per_row=per_example)
    if values.size != n * per_example:  # cannot happen for lists checked above; a guard
        raise DatasetError(f"{filename!r}: {where} has an inconsistent number of values")
    try:
        return values.reshape(n, *shape)
    except ValueError as exc:  # pragma: no cover - guarded above
        raise DatasetError(f"{filename!r}: {where} cannot be shaped as [{n}, {shape}]") from exc


def _parquet_texts(column: Any, filename: str) -> list[str]:
    import pyarrow.compute as pc

    where = f"Parquet column {TEXT_COLUMN!r}"
    null = _first_null_row(column)
    if null is not None:
        raise DatasetError(f"{filename!r}: {where}, row {null + 1} is null; every example needs a text")
    lengths = np.asarray(pc.utf8_length(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    too_long = np.flatnonzero(lengths > MAX_TEXT_CHARS)
    if too_long.size:
        i = int(too_long[0])
        raise DatasetError(_too_long_text(f"{filename!r}: {where}, row {i + 1}", int(lengths[i])))
    return [str(t) for t in column.to_pylist()]


# --- JSONL ------------------------------------------------------------------------------------------------

_JSONL_KINDS = {
    "text": f"a text example (a {TEXT_COLUMN!r} string)",
    "array": f"an array input (an {ARRAY_COLUMN!r} list)",
    "columns": "numeric fields",
}


class _JsonConstant(ValueError):
    """NaN, Infinity or -Infinity in JSON (Python's json accepts them; datasets must not)."""


def _reject_constant(name: str) -> Any:
    raise _JsonConstant(name)


def _read_jsonl(path: Path, filename: str) -> ArrayDataset | TextDataset:
    with path.open("rb") as fb:
        head = fb.read(8)
    if head.startswith(_ZIP_MAGICS):
        raise DatasetError(
            f"{filename!r} is named .jsonl but is a zip archive; if it is an NPZ, upload it with a .npz name"
        )
    _reject_parquet(head, filename, "jsonl")
    _reject_known_binary(head, filename)
    reader = _JsonlReader(filename)
    line_no = 0
    try:
        with path.open("r", encoding="utf-8-sig") as f:
            while line := f.readline(MAX_LINE_CHARS + 1):
                line_no += 1
                if len(line) > MAX_LINE_CHARS:
                    raise DatasetError(
                        f"{filename!r}: line {line_no} is longer than {MAX_LINE_CHARS:,} characters; "
                        "write one example per line"
                    )
                if line.strip():
                    reader.add(line, line_no)
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"{filename!r}: the JSONL is not UTF-8 text (near line {line_no + 1}); save it as UTF-8"
        ) from exc
    return reader.finish()


class _JsonlReader:
    """Validates JSONL records one line at a time; every line must be of the kind of the first."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.kind: str | None = None  # "text" | "array" | "columns"
        self.first_line = 0
        self.labeled = False
        self.columns: list[str] = []
        self.shape: tuple[int, ...] = ()
        self.texts: list[str] = []
        self.arrays: list[np.ndarray] = []
        self.rows: list[list[float]] = []
        self.labels: list[int] = []
        self.cells = 0

    def add(self, line: str, line_no: int) -> None:
        where = f"{self.filename!r}: line {line_no}"
        record = _parse_json_line(line, where)
        label_key = _label_key(record, where)
        kind = (
            "text"
            if TEXT_COLUMN in record
            else "array"
            if isinstance(record.get(ARRAY_COLUMN), list)
            else "columns"
        )
        if self.kind is None:
            self._start(record, kind, label_key, line_no, where)
        elif kind != self.kind:
            raise DatasetError(self._mixed(kind, where))
        elif (label_key is not None) != self.labeled:
            first = f"line {self.first_line}"
            raise DatasetError(
                f"{where}: missing 'label' ({first} has one); label every example or none"
                if label_key is None
                else f"{where} has a 'label' but {first} has none; label every example or none"
            )
        if kind == "text":
            self._add_text(record, label_key, where)
        elif kind == "array":
            self._add_array(record, label_key, where)
        else:
            self._add_columns(record, label_key, where)
        if label_key is not None:
            self.labels.append(_json_label(record[label_key], where))
        if self.cells > MAX_CELLS:
            raise DatasetError(
                f"{where}: the dataset passes {MAX_CELLS:,} values (cells), the most allowed; upload fewer "
                "examples or smaller inputs"
            )

    def _start(
        self, record: dict[str, Any], kind: str, label_key: str | None, line_no: int, where: str
    ) -> None:
        self.kind = kind
        self.first_line = line_no
        self.labeled = label_key is not None
        if kind == "columns":
            self.columns = [key for key in record if key != label_key]
            if not self.columns:
                raise DatasetError(
                    f'{where} has no inputs; give numeric fields (e.g. {{"a": 0.5, "b": 1, "label": 0}}), '
                    f'an "x" list (e.g. {{"x": [0.5, 1], "label": 0}}) or a "text" string'
                )

    def _mixed(self, kind: str, where: str) -> str:
        assert self.kind is not None
        first = f"line {self.first_line}"
        if self.kind == "text":
            return (
                f"{where}: missing {TEXT_COLUMN!r}: {first} is a text example, so every line needs a "
                f"{TEXT_COLUMN!r} string (a file holds text examples or numeric ones, not both)"
            )
        if kind == "text":
            return (
                f"{where} is a text example but {first} has numeric inputs; a file holds text examples or "
                "numeric ones, not both (mixed text and numeric rows)"
            )
        return (
            f"{where} has {_JSONL_KINDS[kind]} but {first} has {_JSONL_KINDS[self.kind]}; every line needs "
            "the same fields"
        )

    def _extra(self, record: dict[str, Any], allowed: str, label_key: str | None, where: str) -> None:
        extra = [key for key in record if key not in (allowed, label_key)]
        if extra:
            raise DatasetError(
                f"{where}: unexpected field(s) {extra}; with {allowed!r} a line has only {allowed!r} and an "
                "optional 'label'"
            )

    def _add_text(self, record: dict[str, Any], label_key: str | None, where: str) -> None:
        self._extra(record, TEXT_COLUMN, label_key, where)
        text = record[TEXT_COLUMN]
        if not isinstance(text, str):
            raise DatasetError(
                f"{where}: {TEXT_COLUMN!r} must be a string, not {_json_type(text)} "
                "(a file holds text examples or numeric ones, not both)"
            )
        if len(text) > MAX_TEXT_CHARS:
            raise DatasetError(_too_long_text(where, len(text)))
        self.texts.append(text)
        self.cells += 1 + self.labeled

    def _add_array(self, record: dict[str, Any], label_key: str | None, where: str) -> None:
        self._extra(record, ARRAY_COLUMN, label_key, where)
        x = _json_array(record[ARRAY_COLUMN], where)
        if not self.arrays:
            self.shape = x.shape
        elif x.shape != self.shape:
            raise DatasetError(
                f"{where}: 'x' has shape {list(x.shape)} but line {self.first_line} has {list(self.shape)}; "
                "every example needs the same shape"
            )
        self.arrays.append(x)
        self.cells += x.size + self.labeled

    def _add_columns(self, record: dict[str, Any], label_key: str | None, where: str) -> None:
        missing = [c for c in self.columns if c not in record]
        if missing:
            raise DatasetError(
                f"{where}: missing field {missing[0]!r}; every line needs the fields of line "
                f"{self.first_line} ({self.columns})"
            )
        if len(record) != len(self.columns) + (label_key is not None):
            extra = [k for k in record if k not in self.columns and k != label_key]
            raise DatasetError(
                f"{where}: unexpected field(s) {extra}; every line needs the fields of line "
                f"{self.first_line} ({self.columns}) and no others"
            )
        self.rows.append([_json_number(record[c], where, c) for c in self.columns])
        self.cells += len(self.columns) + self.labeled

    def finish(self) -> ArrayDataset | TextDataset:
        if self.kind is None:
            raise DatasetError(
                f"{self.filename!r}: the JSONL has no examples; write one JSON object per line "
                '(e.g. {"x": [0.5, 1.0], "label": 2})'
            )
        y = np.asarray(self.labels, dtype=np.int64) if self.labeled else None
        if self.kind == "text":
            return TextDataset(self.texts, y)
        if self.kind == "array":
            return ArrayDataset(np.ascontiguousarray(np.stack(self.arrays)), y)
        return ArrayDataset(_to_float32(np.asarray(self.rows, dtype=np.float64), self.filename), y)


def _parse_json_line(line: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line.rstrip("\r\n"), parse_constant=_reject_constant)
    except _JsonConstant as exc:
        raise DatasetError(f"{where}: {exc} is not a finite number; remove NaN/Infinity values") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); write one JSON object per line"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DatasetError(f"{where}: unreadable JSON ({exc}); write one JSON object per line") from None
    if not isinstance(record, dict):
        raise DatasetError(
            f'{where} is {_json_type(record)}, not a JSON object; write one object per line, e.g. {{"x": '
            '[0.5, 1.0], "label": 2}'
        )
    return record


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _label_key(record: dict[str, Any], where: str) -> str | None:
    keys = [key for key in record if key.lower() == LABEL_COLUMN]
    if len(keys) > 1:
        raise DatasetError(f"{where} has {len(keys)} label fields {keys}; keep one")
    return keys[0] if keys else None


def _json_number(value: Any, where: str, field: str) -> float:
    if isinstance(value, list):
        raise DatasetError(
            f"{where}, field {field!r} holds a list; put array inputs in one field {ARRAY_COLUMN!r} "
            '(e.g. {"x": [0.5, 1.0], "label": 2}), or one number per field'
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(f"{where}, field {field!r}: {_json_type(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DatasetError(f"{where}, field {field!r}: {value} is not a finite number")
    return number


def _json_array(value: list[Any], where: str) -> np.ndarray:
    """An ``x`` (nested) list -> float32 array of 1 to 3 dims, or a DatasetError saying what is wrong."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise DatasetError(
            f"{where}: 'x' is ragged (nested lists of different lengths); an example must be a rectangular "
            "array of numbers"
        ) from None
    if arr.dtype.kind not in "iuf":
        found = {"b": "booleans", "U": "strings"}.get(arr.dtype.kind, "non-numbers, nulls or huge integers")
        raise DatasetError(f"{where}: 'x' must hold only numbers (it holds {found})")
    if not 1 <= arr.ndim <= 3:
        raise DatasetError(
            f"{where}: 'x' has shape {list(arr.shape)}; an example must have 1 to 3 dims (lists nested up "
            "to 3 deep)"
        )
    if arr.size == 0:
        raise DatasetError(f"{where}: 'x' has shape {list(arr.shape)}, with no values; give numbers")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(
            f"{where}: 'x' has a value that is not finite or is too large for float32 (beyond ~3.4e38)"
        )
    return out


def _json_label(value: Any, where: str) -> int:
    index: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, float) and math.isfinite(value) and value == round(value):
        index = int(value)
    if index is not None and index >= MAX_CLASSES:
        raise DatasetError(
            f"{where}: label {index} is too large; class indices must be below {MAX_CLASSES} "
            "(number the classes 0, 1, 2, ...)"
        )
    if index is None or index < 0:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DatasetError(
            f"{where}: label {shown} is not a class index; labels must be integers >= 0 (0, 1, 2, ...)"
        )
    return index


# --- shared checks ----------------------------------------------------------------------------------------


def _check_labels(labels: np.ndarray, filename: str, where: str) -> np.ndarray:
    """Float labels -> int64 class indices, or a DatasetError naming the first bad one.

    ``where`` names a label given ``{row}`` (1-based) and ``{index}`` (0-based).
    """
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        place = where.format(row=i + 1, index=i)
        raise DatasetError(
            f"{filename!r}: {place}: label {float(labels[i]):g} is not a class index; labels must be "
            "integers >= 0 (0, 1, 2, ...)"
        )
    if labels.max() >= MAX_CLASSES:
        i = int(np.argmax(labels))
        place = where.format(row=i + 1, index=i)
        raise DatasetError(
            f"{filename!r}: {place}: label {int(labels[i])} is too large; class indices must be "
            f"below {MAX_CLASSES} (number the classes 0, 1, 2, ...)"
        )
    return labels.astype(np.int64)


def _to_float32(x: np.ndarray, filename: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(
            f"{filename!r}: some values are too large for float32 (beyond ~3.4e38); rescale the inputs"
        )
    return out


def _reject_parquet(head: bytes, filename: str, named: str) -> None:
    if head.startswith(_PARQUET_MAGIC):
        raise DatasetError(
            f"{filename!r} is named .{named} but is a Parquet file; upload it with a .parquet name"
        )


def _too_long_text(where: str, chars: int) -> str:
    return (
        f"{where}: the text has {chars:,} characters, more than the {MAX_TEXT_CHARS:,} allowed; split or "
        "truncate long texts"
    )


def _reject_known_binary(head: bytes, filename: str) -> None:
    if head.startswith(_NPY_MAGIC):
        raise DatasetError(
            f"{filename!r} is a single .npy array; save an .npz with np.savez(path, x=inputs, y=labels)"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise DatasetError(
            f"{filename!r} is a Python pickle; pickles are never loaded. Save arrays with "
            "np.savez(path, x=inputs, y=labels) or write a CSV"
        )


__all__ = [
    "BUILTIN_INFO",
    "FORMATS",
    "KINDS",
    "LABEL_COLUMN",
    "MAX_CELLS",
    "MAX_CLASSES",
    "MAX_TEXT_CHARS",
    "ArrayDataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetKind",
    "TextDataset",
    "detect_format",
    "inspect_dataset",
    "read_dataset",
    "read_text_dataset",
]
