"""Dataset files: read and validate an uploaded CSV or NPZ into arrays.

NumPy only (no torch): the API imports this module to validate uploads before it accepts them.

Two formats:

* **CSV**: a header row naming the columns, then one example per row. An optional ``label`` column holds
  integer class indices (``>= 0``); every other column is a numeric feature, so an example is a vector.
* **NPZ** (``np.savez``): an array ``x`` of shape ``[n, ...]`` (2-D to 4-D: up to 3 dims per example) and an
  optional ``y`` of ``n`` integer class indices. Loaded with ``allow_pickle=False``: user bytes are never
  unpickled.

Every problem raises :class:`DatasetError` whose message says what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("csv", "npz")
LABEL_COLUMN = "label"
MAX_CLASSES = 100_000
"""A label of ``MAX_CLASSES`` or more is almost surely a mistake (an id or a value, not a class index)."""
MAX_ARRAY_BYTES = 8 * 1024**3
"""The most bytes that the arrays of an NPZ may expand to (guards against zip bombs)."""

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_SNIFF_BYTES = 64 * 1024


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
class DatasetInfo:
    """What the API records about a dataset (``files.meta``) and checks job specs against."""

    format: str
    examples: int
    input_shape: list[int]
    num_classes: int | None
    has_labels: bool

    def to_meta(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "examples": self.examples,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "has_labels": self.has_labels,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> DatasetInfo:
        try:
            num_classes = meta["num_classes"]
            return cls(
                format=str(meta["format"]),
                examples=int(meta["examples"]),
                input_shape=[int(d) for d in meta["input_shape"]],
                num_classes=None if num_classes is None else int(num_classes),
                has_labels=bool(meta["has_labels"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"dataset metadata is incomplete or invalid ({exc!r}): {meta!r}") from exc

    @classmethod
    def of(cls, ds: ArrayDataset, format: str) -> DatasetInfo:
        return cls(
            format=format,
            examples=len(ds),
            input_shape=ds.input_shape,
            num_classes=ds.num_classes,
            has_labels=ds.y is not None,
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
    """``"csv"`` or ``"npz"``: by the extension of ``filename``, else by sniffing the first bytes."""
    suffix = Path(filename).suffix.lower()
    if suffix in (".csv", ".npz"):
        return suffix[1:]
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head:
        raise DatasetError(f"{filename!r}: the file is empty; upload a CSV with a header row or an NPZ")
    if head.startswith(_ZIP_MAGICS):
        return "npz"
    _reject_known_binary(head, filename)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sniffed block is fine.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            text = ""
    if text and "\x00" not in text and ("," in text or "\n" in text):
        return "csv"
    raise DatasetError(
        f"{filename!r}: unknown dataset format; upload a .csv (header row, optional 'label' column) "
        "or an .npz made with np.savez(path, x=..., y=...)"
    )


def read_dataset(path: Path, filename: str) -> ArrayDataset:
    """Read and validate a dataset file; ``filename`` (the uploaded name) picks the format by extension."""
    return _read(path, filename)[0]


def inspect_dataset(path: Path, filename: str) -> DatasetInfo:
    """Read and fully validate a dataset file, and describe it."""
    ds, fmt = _read(path, filename)
    return DatasetInfo.of(ds, fmt)


def _read(path: Path, filename: str) -> tuple[ArrayDataset, str]:
    if path.stat().st_size == 0:
        raise DatasetError(f"{filename!r}: the file is empty; upload a CSV with a header row or an NPZ")
    fmt = detect_format(path, filename)
    if fmt == "csv":
        return _read_csv(path, filename), fmt
    return _read_npz(path, filename), fmt


# --- CSV --------------------------------------------------------------------------------------------------


def _read_csv(path: Path, filename: str) -> ArrayDataset:
    with path.open("rb") as fb:
        head = fb.read(8)
    if head.startswith(_ZIP_MAGICS):
        raise DatasetError(
            f"{filename!r} is named .csv but is a zip archive; if it is an NPZ, upload it with a .npz name"
        )
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
    "LABEL_COLUMN",
    "MAX_CLASSES",
    "ArrayDataset",
    "DatasetError",
    "DatasetInfo",
    "detect_format",
    "inspect_dataset",
    "read_dataset",
]
