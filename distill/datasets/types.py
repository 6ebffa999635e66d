"""The dataset types every reader returns and every caller checks against, and the limits on uploads.

NumPy only (no torch): the API imports this package to validate uploads before it accepts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

FORMATS = ("csv", "npz", "parquet", "jsonl")
KINDS = ("tabular", "text", "lm")
DatasetKind = Literal["tabular", "text", "lm"]
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
class LMDataset:
    """Language-model records (``task: "causal_lm"``): each ``{"prompt": str, "completion": str | None}``
    or ``{"messages": [{"role": ..., "content": ...}, ...]}`` (the last assistant turn is the completion)."""

    records: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def input_shape(self) -> list[int]:
        return []

    @property
    def num_classes(self) -> int | None:
        return None

    @property
    def y(self) -> None:
        return None

    @property
    def has_completions(self) -> bool:
        """Every record has a completion to train on."""
        return all(lm_record_has_completion(r) for r in self.records)

    def subset(self, indices: np.ndarray) -> LMDataset:
        return LMDataset([self.records[int(i)] for i in np.asarray(indices).reshape(-1)])


def lm_record_has_completion(record: dict[str, Any]) -> bool:
    """A prompt/completion record with a completion, or chat messages ending with an assistant turn."""
    if "messages" in record:
        messages = record["messages"]
        return bool(messages) and messages[-1].get("role") == "assistant"
    return record.get("completion") is not None


@dataclass
class DatasetInfo:
    """What the API records about a dataset (``files.meta``) and checks job specs against.

    ``kind`` is ``"tabular"`` (numeric inputs of shape ``input_shape``), ``"text"`` (``input_shape`` is
    ``[]``) or ``"lm"`` (prompt/completion or chat records; ``has_labels``: every record has a completion);
    metadata recorded before ``kind`` existed reads as ``"tabular"``.
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
                kind="text" if kind == "text" else "lm" if kind == "lm" else "tabular",
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(f"dataset metadata is incomplete or invalid ({exc!r}): {meta!r}") from exc

    @classmethod
    def of(cls, ds: ArrayDataset | TextDataset | LMDataset, format: str) -> DatasetInfo:
        if isinstance(ds, LMDataset):
            return cls(format, len(ds), [], None, ds.has_completions, kind="lm")
        return cls(
            format=format,
            examples=len(ds),
            input_shape=ds.input_shape,
            num_classes=ds.num_classes,
            has_labels=ds.y is not None,
            kind="text" if isinstance(ds, TextDataset) else "tabular",
        )
