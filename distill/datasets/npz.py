"""NPZ datasets (``np.savez``): an array ``x`` of shape ``[n, ...]`` and an optional ``y`` of labels.

``x`` is 2-D to 4-D (up to 3 dims per example); ``y`` holds ``n`` integer class indices. Loaded with
``allow_pickle=False``: user bytes are never unpickled. The arrays may expand to at most
:data:`distill.datasets.types.MAX_ARRAY_BYTES` (a guard against zip bombs).

:func:`inspect` (what the API runs on an upload) never holds an array: it reads each member's zip entry
and ``.npy`` header first, refusing a declared size over ``max_array_bytes`` or an absurd compression
ratio *before* inflating anything, then checks the values a bounded chunk at a time.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import check_labels, to_float32
from distill.datasets.types import ArrayDataset, DatasetError, DatasetInfo

CHUNK_BYTES = 8 * 1024**2
"""How much of an array :func:`inspect` inflates at a time."""
MAX_COMPRESSION_RATIO = 200
"""A member inflating more than this many times over (and past :data:`RATIO_FLOOR` bytes) is refused as a
zip bomb: real numeric data compresses far less (deflate's own ceiling is about 1032:1)."""
RATIO_FLOOR = 16 * 1024**2
MEMBERS = ("x", "y")


def read(path: Path, filename: str) -> ArrayDataset:
    """Read and validate an NPZ dataset (``x`` and an optional ``y``), never unpickling anything."""
    _check_npz_sizes(path, filename)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if "x" not in names:
                raise DatasetError(_no_x(filename, names))
            x = _load_member(npz, "x", filename)
            y = _load_member(npz, "y", filename) if "y" in names else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{filename!r}: cannot read the NPZ ({exc}); re-save it with np.savez") from exc
    return _check_npz_arrays(x, y, filename)


def _no_x(filename: str, names: list[str]) -> str:
    """Why a zip without ``x`` is no dataset; a Hugging Face model folder zipped is told where it belongs."""
    if "config.json" in names or any(name.endswith(".safetensors") for name in names):
        return (
            f"{filename!r} is a model archive (it has {names}), not a dataset: upload it with purpose=model "
            "(distill files upload PATH --purpose model)"
        )
    return (
        f"{filename!r}: the NPZ has no array named 'x' (it has {names}); "
        "save with np.savez(path, x=inputs, y=labels)"
    )


def _check_npz_sizes(path: Path, filename: str, max_bytes: int | None = None) -> None:
    limit = types.MAX_ARRAY_BYTES if max_bytes is None else max_bytes
    try:
        with zipfile.ZipFile(path) as zf:
            _check_entries(zf.infolist(), filename, limit)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DatasetError(f"{filename!r}: the NPZ is not a valid zip archive ({exc}); re-save it") from exc


def _check_entries(infos: list[zipfile.ZipInfo], filename: str, limit: int) -> None:
    """The zip directory's declared sizes, before anything is inflated (zipfile never inflates a member
    past its declared size, so these bound what reading can produce)."""
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise DatasetError(
            f"{filename!r}: the NPZ's arrays expand to {total:,} bytes, more than the {limit:,} allowed; "
            "upload fewer examples or smaller inputs"
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_COMPRESSION_RATIO:
            raise DatasetError(
                f"{filename!r}: NPZ member {info.filename!r} inflates {ratio:,.0f} times over "
                f"({info.compress_size:,} -> {info.file_size:,} bytes), more than the "
                f"{MAX_COMPRESSION_RATIO} allowed (a zip bomb?); save real data with np.savez"
            )


def inspect(path: Path, filename: str, max_array_bytes: int | None = None) -> DatasetInfo:
    """Validate an NPZ dataset as :func:`read` does, in bounded memory, and describe it.

    ``max_array_bytes`` (default :data:`~distill.datasets.types.MAX_ARRAY_BYTES`): the most bytes the arrays
    may inflate to, checked against the zip's declared sizes before anything is inflated.
    """
    limit = types.MAX_ARRAY_BYTES if max_array_bytes is None else max_array_bytes
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_entries(infos, filename, limit)
            by_name = {info.filename.removesuffix(".npy"): info for info in infos}
            if "x" not in by_name:
                raise DatasetError(_no_x(filename, sorted(by_name)))
            n, shape = _inspect_x(zf, by_name["x"], filename)
            classes = _inspect_y(zf, by_name["y"], n, filename) if "y" in by_name else None
    except DatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise DatasetError(f"{filename!r}: cannot read the NPZ ({exc}); re-save it with np.savez") from exc
    return DatasetInfo(
        format="npz",
        examples=n,
        input_shape=shape,
        num_classes=classes,
        has_labels="y" in by_name,
    )


def _member_header(
    f: Any, info: zipfile.ZipInfo, name: str, filename: str
) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The ``.npy`` header of one member: its shape, Fortran order and dtype, checked against the zip's
    declared size (so the shape cannot claim more data than the entry holds)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise DatasetError(
            f"{filename!r}: NPZ array {name!r} uses .npy format {version}; re-save it with np.savez"
        )
    if dtype.hasobject:
        raise DatasetError(
            f"{filename!r}: NPZ array {name!r} is an object array, which would need unpickling; "
            "store numbers only (e.g. np.asarray(values, dtype=np.float32))"
        )
    data_bytes = math.prod(shape) * dtype.itemsize  # exact: no int64 overflow for absurd shapes
    if f.tell() + data_bytes != info.file_size:
        raise DatasetError(
            f"{filename!r}: NPZ array {name!r} declares shape {list(shape)} ({data_bytes:,} bytes) but its "
            f"entry holds {info.file_size - f.tell():,}; re-save it with np.savez"
        )
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _chunks(f: Any, dtype: np.dtype[Any], count: int, filename: str, name: str) -> Any:
    """The member's values, a bounded chunk at a time (flat, in storage order)."""
    per_chunk = max(1, CHUNK_BYTES // max(dtype.itemsize, 1))
    done = 0
    while done < count:
        want = min(per_chunk, count - done)
        data = f.read(want * dtype.itemsize)
        if len(data) != want * dtype.itemsize:
            raise DatasetError(f"{filename!r}: NPZ array {name!r} is truncated; re-save it with np.savez")
        yield done, np.frombuffer(data, dtype=dtype)
        done += want


def _inspect_x(zf: zipfile.ZipFile, info: zipfile.ZipInfo, filename: str) -> tuple[int, list[int]]:
    with zf.open(info) as f:
        shape, fortran, dtype = _member_header(f, info, "x", filename)
        if dtype.kind not in "biuf":
            raise DatasetError(
                f"{filename!r}: NPZ array 'x' has dtype {dtype}; it must hold real numbers (e.g. float32)"
            )
        if not 2 <= len(shape) <= 4:
            raise DatasetError(
                f"{filename!r}: NPZ array 'x' has shape {list(shape)}; it must be [examples, ...] with 1 to "
                "3 dims per example (2-D to 4-D)"
            )
        if shape[0] == 0:
            raise DatasetError(f"{filename!r}: NPZ array 'x' has zero examples (shape {list(shape)})")
        if any(d == 0 for d in shape[1:]):
            raise DatasetError(
                f"{filename!r}: NPZ array 'x' has zero features per example (shape {list(shape)})"
            )
        n, per_example = shape[0], math.prod(shape[1:])
        for start, values in _chunks(f, dtype, n * per_example, filename, "x"):
            if dtype.kind != "f":
                continue  # integers and booleans always fit float32
            with np.errstate(over="ignore"):
                bad = ~np.isfinite(values.astype(np.float32))
            if bad.any():
                flat = start + int(np.argmax(bad))
                example = flat % n if fortran else flat // per_example
                what = (
                    "NaN or infinite values"
                    if not np.isfinite(values[int(np.argmax(bad))])
                    else "values too large for float32 (beyond ~3.4e38)"
                )
                raise DatasetError(
                    f"{filename!r}: NPZ array 'x' has {what} (first in example {example}); remove or "
                    "rescale them"
                )
        _drain(f)
    return n, list(shape[1:])


def _inspect_y(zf: zipfile.ZipFile, info: zipfile.ZipInfo, n: int, filename: str) -> int | None:
    with zf.open(info) as f:
        shape, _fortran, dtype = _member_header(f, info, "y", filename)
        if len(shape) != 1:
            raise DatasetError(
                f"{filename!r}: NPZ array 'y' has shape {list(shape)}; it must be 1-D: one class index "
                "per example"
            )
        if shape[0] != n:
            raise DatasetError(
                f"{filename!r}: NPZ arrays 'x' and 'y' differ in length "
                f"({n} examples, {shape[0]} labels); give one label per example"
            )
        if dtype.kind not in "biuf":
            raise DatasetError(
                f"{filename!r}: NPZ array 'y' has dtype {dtype}; labels must be integer class indices"
            )
        top = -1
        for start, values in _chunks(f, dtype, n, filename, "y"):
            labels = check_labels(values.astype(np.float64), filename, where="NPZ y[{index}]", offset=start)
            top = max(top, int(labels.max()))
        _drain(f)
    return top + 1 if top >= 0 else None


def _drain(f: Any) -> None:
    """Read to the end of the member, so that zipfile checks its CRC (a corrupt entry raises)."""
    if f.read(1):  # pragma: no cover - the header's size was checked against the entry's
        raise DatasetError("an NPZ member holds more bytes than its array; re-save it with np.savez")


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
