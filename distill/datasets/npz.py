"""NPZ datasets (``np.savez``): an array ``x`` of shape ``[n, ...]`` and an optional ``y`` of labels.

``x`` is 2-D to 4-D (up to 3 dims per example); ``y`` holds ``n`` integer class indices. Loaded with
``allow_pickle=False``: user bytes are never unpickled. The arrays may expand to at most
:data:`distill.datasets.types.MAX_ARRAY_BYTES` (a guard against zip bombs).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import check_labels, to_float32
from distill.datasets.types import ArrayDataset, DatasetError


def read(path: Path, filename: str) -> ArrayDataset:
    """Read and validate an NPZ dataset (``x`` and an optional ``y``), never unpickling anything."""
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
    if total > types.MAX_ARRAY_BYTES:
        raise DatasetError(
            f"{filename!r}: the NPZ's arrays expand to {total} bytes, more than the "
            f"{types.MAX_ARRAY_BYTES} allowed"
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
        y = check_labels(y.astype(np.float64), filename, where="NPZ y[{index}]")
    return ArrayDataset(to_float32(x, filename), y)
