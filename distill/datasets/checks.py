"""Value checks that several readers share: labels as class indices, float32 inputs, text length."""

from __future__ import annotations

import numpy as np

from distill.datasets import types
from distill.datasets.types import DatasetError


def check_labels(labels: np.ndarray, filename: str, where: str, offset: int = 0) -> np.ndarray:
    """Float labels -> int64 class indices, or a DatasetError naming the first bad one.

    ``where`` names a label given ``{row}`` (1-based) and ``{index}`` (0-based); ``offset``: the index of
    ``labels[0]`` in the whole dataset (when labels are checked a chunk at a time).
    """
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        place = where.format(row=offset + i + 1, index=offset + i)
        raise DatasetError(
            f"{filename!r}: {place}: label {float(labels[i]):g} is not a class index; labels must be "
            "integers >= 0 (0, 1, 2, ...)"
        )
    if labels.max() >= types.MAX_CLASSES:
        i = int(np.argmax(labels))
        place = where.format(row=offset + i + 1, index=offset + i)
        raise DatasetError(
            f"{filename!r}: {place}: label {int(labels[i])} is too large; class indices must be "
            f"below {types.MAX_CLASSES} (number the classes 0, 1, 2, ...)"
        )
    return labels.astype(np.int64)


def to_float32(x: np.ndarray, filename: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        raise DatasetError(
            f"{filename!r}: some values are too large for float32 (beyond ~3.4e38); rescale the inputs"
        )
    return out


def too_long_text(where: str, chars: int) -> str:
    return (
        f"{where}: the text has {chars:,} characters, more than the {types.MAX_TEXT_CHARS:,} allowed; "
        "split or truncate long texts"
    )
