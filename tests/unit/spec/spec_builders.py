"""Shared builders for the spec tests: datasets and models as their references resolve (no services)."""

from __future__ import annotations

from typing import Any

from distill.datasets import BUILTIN_INFO, DatasetInfo
from distill.modelfile import BUILTIN_TEXT_TEACHERS, TextModelInfo
from distill.spec import JobSpec, StoredModelConfig

DIGITS = BUILTIN_INFO["digits"]
MINILM = BUILTIN_TEXT_TEACHERS["all-minilm-l6-v2"]
ENCODER = {"arch": "encoder", "layers": 1}


def table(
    shape: list[int] | None = None, classes: int | None = 10, labels: bool = True, kind: str = "tabular"
) -> DatasetInfo:
    """A dataset as the API records it (``files.meta``)."""
    return DatasetInfo(
        format="npz" if kind == "tabular" else "jsonl",
        examples=30,
        input_shape=([8, 8] if shape is None else shape) if kind == "tabular" else [],
        num_classes=classes if labels else None,
        has_labels=labels,
        kind=kind,  # type: ignore[arg-type]
    )


def texts(classes: int | None = 2, labels: bool = True) -> DatasetInfo:
    return table(classes=classes, labels=labels, kind="text")


def tabular_model(shape: list[int] | None = None, classes: int = 10, **model: Any) -> StoredModelConfig:
    return StoredModelConfig.model_validate(
        {
            "model": model or {"arch": "mlp", "hidden": [16]},
            "input_shape": shape or [8, 8],
            "num_classes": classes,
        }
    )


def text_model(
    task: str = "classification", classes: int | None = 2, tokenizer: bool = True, layers: int | None = 2
) -> TextModelInfo:
    return TextModelInfo(
        task=task,
        num_classes=classes,
        classes=None,
        has_tokenizer=tokenizer,
        max_length=128,
        hidden_size=32,
        layers=layers,
    )


def spec_of(**fields: Any) -> JobSpec:
    """A valid spec: digits, an MLP student, then ``fields`` on top."""
    return JobSpec.model_validate({"data": {"train": {"builtin": "digits"}}, **fields})
