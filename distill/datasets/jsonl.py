"""JSONL datasets (``.jsonl``/``.ndjson``): one JSON object per line, of one kind on every line.

``{"a": 1.5, "b": 2, "label": 0}`` (numeric fields, as CSV columns), ``{"x": [[0, 1], [2, 3]], "label": 4}``
(an array input), ``{"text": "...", "label": 1}`` (a text example), or a language-model record
(``task: "causal_lm"``): ``{"prompt": "...", "completion": "..."}`` (completion optional) or
``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``.
NaN and Infinity are refused.

Lines are read one at a time; :func:`inspect` (the API, on an upload) keeps only counts, so its memory
does not grow with the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from distill.datasets import types
from distill.datasets.checks import to_float32, too_long_text
from distill.datasets.types import (
    ARRAY_COLUMN,
    LABEL_COLUMN,
    TEXT_COLUMN,
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    LMDataset,
    TextDataset,
    lm_record_has_completion,
)

CHUNK_ROWS = 4096

_JSONL_KINDS = {
    "text": f"a text example (a {TEXT_COLUMN!r} string)",
    "array": f"an array input (an {ARRAY_COLUMN!r} list)",
    "columns": "numeric fields",
    "lm": 'a language-model record ("prompt"/"completion" or "messages")',
}
LM_ROLES = ("system", "user", "assistant")


class _JsonConstant(ValueError):
    """NaN, Infinity or -Infinity in JSON (Python's json accepts them; datasets must not)."""


def _reject_constant(name: str) -> Any:
    raise _JsonConstant(name)


def read(path: Path, filename: str) -> ArrayDataset | TextDataset | LMDataset:
    """Read and validate a JSONL dataset, one line at a time."""
    found = _read(path, filename, keep=True)
    assert not isinstance(found, DatasetInfo)
    return found


def inspect(path: Path, filename: str) -> DatasetInfo:
    """Validate a JSONL dataset as :func:`read` does, keeping no examples, and describe it."""
    found = _read(path, filename, keep=False)
    assert isinstance(found, DatasetInfo)
    return found


def _read(path: Path, filename: str, keep: bool) -> ArrayDataset | TextDataset | LMDataset | DatasetInfo:
    reader = _JsonlReader(filename, keep)
    line_no = 0
    try:
        with path.open("r", encoding="utf-8-sig") as f:
            while line := f.readline(types.MAX_LINE_CHARS + 1):
                line_no += 1
                if len(line) > types.MAX_LINE_CHARS:
                    raise DatasetError(
                        f"{filename!r}: line {line_no} is longer than {types.MAX_LINE_CHARS:,} characters; "
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

    def __init__(self, filename: str, keep: bool = True) -> None:
        self.filename = filename
        self.keep = keep
        self.examples = 0
        self.top_label = -1
        self.kind: str | None = None  # "text" | "array" | "columns" | "lm"
        self.records: list[dict[str, Any]] = []
        self.completed = 0
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
            "lm"
            if "prompt" in record or "messages" in record
            else "text"
            if TEXT_COLUMN in record
            else "array"
            if isinstance(record.get(ARRAY_COLUMN), list)
            else "columns"
        )
        if self.kind is None:
            self._start(record, kind, label_key, line_no, where)
        elif kind != self.kind:
            raise DatasetError(self._mixed(kind, where))
        if kind == "lm":
            self._add_lm(record, where)
            return
        if (label_key is not None) != self.labeled:
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
        self.examples += 1
        if label_key is not None:
            label = _json_label(record[label_key], where)
            self.top_label = max(self.top_label, label)
            if self.keep:
                self.labels.append(label)
        if self.cells > types.MAX_CELLS:
            raise DatasetError(
                f"{where}: the dataset passes {types.MAX_CELLS:,} values (cells), the most allowed; upload "
                "fewer examples or smaller inputs"
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

    def _add_lm(self, record: dict[str, Any], where: str) -> None:
        """A prompt/completion or chat record; the completion is optional (counted in ``completed``)."""
        if "messages" in record:
            extra = [key for key in record if key != "messages"]
            if extra:
                raise DatasetError(f"{where}: unexpected field(s) {extra}; a chat record has only 'messages'")
            clean: dict[str, Any] = {"messages": _lm_messages(record["messages"], where)}
        else:
            extra = [key for key in record if key not in ("prompt", "completion")]
            if extra:
                raise DatasetError(
                    f"{where}: unexpected field(s) {extra}; a record has 'prompt' and an optional "
                    "'completion' (or only chat 'messages')"
                )
            clean = {"prompt": _lm_text(record["prompt"], where, "prompt"), "completion": None}
            if record.get("completion") is not None:
                clean["completion"] = _lm_text(record["completion"], where, "completion")
        self.examples += 1
        self.completed += lm_record_has_completion(clean)
        self.cells += 2
        if self.examples > types.MAX_CELLS // 2:
            raise DatasetError(
                f"{where}: the dataset passes {types.MAX_CELLS // 2:,} records, the most allowed"
            )
        if self.keep:
            self.records.append(clean)

    def _add_text(self, record: dict[str, Any], label_key: str | None, where: str) -> None:
        self._extra(record, TEXT_COLUMN, label_key, where)
        text = record[TEXT_COLUMN]
        if not isinstance(text, str):
            raise DatasetError(
                f"{where}: {TEXT_COLUMN!r} must be a string, not {_json_type(text)} "
                "(a file holds text examples or numeric ones, not both)"
            )
        if len(text) > types.MAX_TEXT_CHARS:
            raise DatasetError(too_long_text(where, len(text)))
        if self.keep:
            self.texts.append(text)
        self.cells += 1 + self.labeled

    def _add_array(self, record: dict[str, Any], label_key: str | None, where: str) -> None:
        self._extra(record, ARRAY_COLUMN, label_key, where)
        x = _json_array(record[ARRAY_COLUMN], where)
        if self.examples == 0:
            self.shape = x.shape
        elif x.shape != self.shape:
            raise DatasetError(
                f"{where}: 'x' has shape {list(x.shape)} but line {self.first_line} has {list(self.shape)}; "
                "every example needs the same shape"
            )
        if self.keep:
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
        if not self.keep and len(self.rows) >= CHUNK_ROWS:
            self._check_rows()

    def _check_rows(self) -> np.ndarray:
        """The buffered rows as float32 (a DatasetError if one is beyond float32); dropped unless kept."""
        x = to_float32(np.asarray(self.rows, dtype=np.float64), self.filename)
        if not self.keep:
            self.rows = []
        return x

    def finish(self) -> ArrayDataset | TextDataset | LMDataset | DatasetInfo:
        if self.kind is None:
            raise DatasetError(
                f"{self.filename!r}: the JSONL has no examples; write one JSON object per line "
                '(e.g. {"x": [0.5, 1.0], "label": 2})'
            )
        if self.kind == "lm":
            if self.keep:
                return LMDataset(self.records)
            return DatasetInfo("jsonl", self.examples, [], None, self.completed == self.examples, kind="lm")
        if not self.keep:
            if self.kind == "columns" and self.rows:
                self._check_rows()
            return DatasetInfo(
                format="jsonl",
                examples=self.examples,
                input_shape=[] if self.kind == "text" else self._input_shape(),
                num_classes=self.top_label + 1 if self.labeled and self.examples else None,
                has_labels=self.labeled,
                kind="text" if self.kind == "text" else "tabular",
            )
        y = np.asarray(self.labels, dtype=np.int64) if self.labeled else None
        if self.kind == "text":
            return TextDataset(self.texts, y)
        if self.kind == "array":
            return ArrayDataset(np.ascontiguousarray(np.stack(self.arrays)), y)
        return ArrayDataset(self._check_rows(), y)

    def _input_shape(self) -> list[int]:
        if self.kind == "array":
            return [int(d) for d in self.shape]
        return [len(self.columns)]


def _lm_text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}: {field!r} must be a string, not {_json_type(value)}")
    if len(value) > types.MAX_TEXT_CHARS:
        raise DatasetError(too_long_text(where, len(value)))
    return value


def _lm_messages(value: Any, where: str) -> list[dict[str, str]]:
    """Chat ``messages``: a non-empty list of ``{"role", "content"}`` with known roles, not ending with
    a system turn."""
    if not isinstance(value, list) or not value:
        raise DatasetError(
            f'{where}: \'messages\' must be a non-empty list of {{"role": ..., "content": ...}} objects'
        )
    messages = []
    for i, message in enumerate(value):
        at = f"{where}, messages[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise DatasetError(f'{at}: a message is {{"role": ..., "content": ...}} and nothing else')
        if message["role"] not in LM_ROLES:
            raise DatasetError(f"{at}: role {message['role']!r} is not one of {', '.join(LM_ROLES)}")
        messages.append({"role": message["role"], "content": _lm_text(message["content"], at, "content")})
    if not any(m["role"] == "user" for m in messages):
        raise DatasetError(f"{where}: 'messages' has no user turn to use as the prompt")
    return messages


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
    if index is not None and index >= types.MAX_CLASSES:
        raise DatasetError(
            f"{where}: label {index} is too large; class indices must be below {types.MAX_CLASSES} "
            "(number the classes 0, 1, 2, ...)"
        )
    if index is None or index < 0:
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise DatasetError(
            f"{where}: label {shown} is not a class index; labels must be integers >= 0 (0, 1, 2, ...)"
        )
    return index
