"""Dataset files: read and validate an uploaded CSV, NPZ, Parquet or JSONL file into arrays or texts.

NumPy only (no torch): the API imports this package to validate uploads before it accepts them. pyarrow (for
Parquet) is imported only when a Parquet file is read.

* :mod:`~distill.datasets.types`: :class:`ArrayDataset`, :class:`TextDataset`, :class:`DatasetInfo`,
  :class:`DatasetError` and the limits on uploads;
* :mod:`~distill.datasets.sniff`: which format a file is in (the one place that reads magic bytes);
* one reader per format, :mod:`~distill.datasets.csv`, :mod:`~distill.datasets.npz`,
  :mod:`~distill.datasets.parquet`, :mod:`~distill.datasets.jsonl`, in the registry of
  :mod:`~distill.datasets.readers`;
* :mod:`~distill.datasets.builtins`: the builtin datasets (``digits``, ``mnist1d``) and their loaders;
  :mod:`~distill.datasets.split`: the deterministic held-out split.

Numeric files read as an :class:`ArrayDataset` (:func:`read_dataset`); files of texts (a ``text`` field or
column) are *text datasets* (``DatasetInfo.kind == "text"``) and read as a :class:`TextDataset`
(:func:`read_text_dataset`), so that ``ArrayDataset.x`` is always a float32 array. :func:`inspect_dataset`
describes either kind. Every problem raises :class:`DatasetError` whose message says what is wrong, where
(row, line or column) and how to fix it.
"""

from __future__ import annotations

from distill.datasets.builtins import BUILTIN_INFO, BUILTINS, Builtin, load_builtin
from distill.datasets.readers import (
    READERS,
    inspect_dataset,
    read_dataset,
    read_lm_dataset,
    read_text_dataset,
)
from distill.datasets.sniff import detect_format
from distill.datasets.split import holdout_split
from distill.datasets.types import (
    FORMATS,
    KINDS,
    LABEL_COLUMN,
    MAX_CELLS,
    MAX_CLASSES,
    MAX_TEXT_CHARS,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    DatasetKind,
    LMDataset,
    TextDataset,
)

__all__ = [
    "BUILTINS",
    "BUILTIN_INFO",
    "FORMATS",
    "KINDS",
    "LABEL_COLUMN",
    "MAX_CELLS",
    "MAX_CLASSES",
    "MAX_TEXT_CHARS",
    "READERS",
    "ArrayDataset",
    "Builtin",
    "DatasetError",
    "DatasetInfo",
    "DatasetKind",
    "LMDataset",
    "TextDataset",
    "detect_format",
    "holdout_split",
    "inspect_dataset",
    "load_builtin",
    "read_dataset",
    "read_lm_dataset",
    "read_text_dataset",
]
