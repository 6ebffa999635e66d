"""distill.datasets.types: the dataset types and their descriptions (files.meta)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from distill.datasets import (
    ArrayDataset,
    DatasetError,
    DatasetInfo,
    TextDataset,
)


def test_from_meta_rejects_incomplete() -> None:
    with pytest.raises(DatasetError, match="metadata"):
        DatasetInfo.from_meta({"format": "csv"})


def test_array_dataset_helpers() -> None:
    ds = ArrayDataset(np.zeros((4, 2, 3), dtype=np.float32), np.array([0, 3, 1, 1]))
    assert len(ds) == 4 and ds.input_shape == [2, 3] and ds.num_classes == 4
    sub = ds.subset(np.array([0, 2]))
    assert len(sub) == 2 and sub.y is not None and sub.y.tolist() == [0, 1]


def test_text_dataset_helpers() -> None:
    ds = TextDataset(["a", "b", "c", "d"], np.array([0, 2, 1, 1]))
    assert len(ds) == 4 and ds.input_shape == [] and ds.num_classes == 3
    sub = ds.subset(np.array([1, 3]))
    assert sub.texts == ["b", "d"] and sub.y is not None and sub.y.tolist() == [2, 1]
    assert TextDataset(["a"]).num_classes is None


def test_from_meta_kind_backwards_compatible() -> None:
    old = {"format": "csv", "examples": 3, "input_shape": [2], "num_classes": 2, "has_labels": True}
    assert DatasetInfo.from_meta(old).kind == "tabular"
    text = DatasetInfo(
        format="jsonl", examples=2, input_shape=[], num_classes=None, has_labels=False, kind="text"
    )
    assert DatasetInfo.from_meta(text.to_meta()) == text
    with pytest.raises(DatasetError, match="kind"):
        DatasetInfo.from_meta({**old, "kind": "audio"})


def test_no_torch_import() -> None:
    # The API imports this module; it must stay light (checked in a fresh interpreter).
    import subprocess

    code = (
        "import sys, distill.datasets, distill.modelfile; "
        "print('torch' in sys.modules, 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
