"""The registry of dataset readers (one module per format) and the entry points that use it.

:func:`read_dataset` reads numeric inputs (an :class:`ArrayDataset`), :func:`read_text_dataset` texts (a
:class:`TextDataset`), and :func:`inspect_dataset` validates either kind and describes it. The format is
found once, by :func:`distill.datasets.sniff.detect_format`; each reader trusts it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distill.datasets import csv, jsonl, npz, parquet
from distill.datasets.sniff import UPLOAD_HINT, detect_format
from distill.datasets.types import (
    TEXT_COLUMN,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    LMDataset,
    TextDataset,
)

Reader = Callable[[Path, str], ArrayDataset | TextDataset | LMDataset]

READERS: dict[str, Reader] = {
    "csv": csv.read,
    "npz": npz.read,
    "parquet": parquet.read,
    "jsonl": jsonl.read,
}
"""``format -> reader``: ``reader(path, filename)`` validates the whole file, or raises DatasetError."""


def read_any(path: Path, filename: str) -> tuple[ArrayDataset | TextDataset | LMDataset, str]:
    """The dataset in ``path`` (``filename``: the uploaded name, which may pick the format) and its format."""
    if path.stat().st_size == 0:
        raise DatasetError(f"{filename!r}: the file is empty; {UPLOAD_HINT}")
    fmt = detect_format(path, filename)
    return READERS[fmt](path, filename), fmt


def read_dataset(path: Path, filename: str) -> ArrayDataset:
    """Read and validate a numeric dataset file; ``filename`` (the uploaded name) picks the format.

    A text dataset (``text`` field or column) raises :class:`DatasetError`: read it with
    :func:`read_text_dataset`.
    """
    ds, _ = read_any(path, filename)
    if isinstance(ds, LMDataset):
        raise DatasetError(
            f"{filename!r} holds language-model records (prompt/completion or messages), not numeric inputs; "
            'use it in a task "causal_lm" job'
        )
    if isinstance(ds, TextDataset):
        raise DatasetError(
            f"{filename!r} is a text dataset (its examples are strings in {TEXT_COLUMN!r}), not numeric "
            "inputs; use it where text is expected, or upload numeric inputs"
        )
    return ds


def read_lm_dataset(path: Path, filename: str) -> LMDataset:
    """Read and validate a language-model dataset (JSONL with prompt/completion or chat messages)."""
    ds, _ = read_any(path, filename)
    if not isinstance(ds, LMDataset):
        raise DatasetError(
            f'{filename!r} is not a language-model dataset; write JSONL lines with "prompt" and '
            '"completion" (or chat "messages")'
        )
    return ds


def read_text_dataset(path: Path, filename: str) -> TextDataset:
    """Read and validate a text dataset file (JSONL lines or a Parquet column ``text``)."""
    ds, _ = read_any(path, filename)
    if not isinstance(ds, TextDataset):
        raise DatasetError(
            f"{filename!r} holds numeric inputs, not texts; a text dataset needs a {TEXT_COLUMN!r} field "
            'on every line (e.g. {"text": "...", "label": 0}) or a string column named "text"'
        )
    return ds


def inspect_dataset(path: Path, filename: str, *, max_array_bytes: int | None = None) -> DatasetInfo:
    """Fully validate a dataset file (numeric or text), and describe it, in bounded memory (what the API
    runs on an upload: it never holds the whole dataset, only a chunk of rows or values at a time).

    ``max_array_bytes``: the most bytes an NPZ's arrays may inflate to (default
    :data:`~distill.datasets.types.MAX_ARRAY_BYTES`), checked before anything is inflated.
    """
    if path.stat().st_size == 0:
        raise DatasetError(f"{filename!r}: the file is empty; {UPLOAD_HINT}")
    fmt = detect_format(path, filename)
    if fmt == "csv":
        return csv.inspect(path, filename)
    if fmt == "jsonl":
        return jsonl.inspect(path, filename)
    if fmt == "parquet":
        return parquet.inspect(path, filename)
    return npz.inspect(path, filename, max_array_bytes)
