"""The builtin datasets, in one registry: name, description, what they are, how to load them, and their
official split. The spec's ``{"builtin": name}``, the API's checks and the worker's loading all read it.

Loading needs scikit-learn (``digits``) or the ``mnist1d`` package (generated offline, cached as an NPZ);
both are imported only when a builtin is loaded, so the API can describe builtins without them.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.datasets.split import holdout_split
from distill.datasets.types import ArrayDataset, DatasetInfo

MNIST1D_CACHE = "mnist1d-v1.npz"


@dataclass(frozen=True)
class Builtin:
    """One builtin dataset."""

    name: str
    description: str
    info: DatasetInfo
    """What it is (examples over both splits, input shape, classes), as an uploaded dataset is described."""
    official_split: str
    """How its test split is made (jobs without ``data.validation`` evaluate on it)."""
    load: Callable[[Path], tuple[ArrayDataset, ArrayDataset]]
    """``cache_dir -> (train, test)``."""


def _load_digits(_cache_dir: Path) -> tuple[ArrayDataset, ArrayDataset]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return holdout_split(ArrayDataset(np.ascontiguousarray(x), y))


def _load_mnist1d(cache_dir: Path) -> tuple[ArrayDataset, ArrayDataset]:
    path = cache_dir / MNIST1D_CACHE
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, EOFError):
            arrays = None  # a damaged cache: generate again
        if arrays is not None:
            return _mnist1d_datasets(arrays)
    arrays = _generate_mnist1d()
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".mnist1d-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return _mnist1d_datasets(arrays)


def _generate_mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global `random` and NumPy generators; leave them as they were.
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def _mnist1d_datasets(arrays: dict[str, np.ndarray]) -> tuple[ArrayDataset, ArrayDataset]:
    train = ArrayDataset(np.ascontiguousarray(arrays["x"], dtype=np.float32), arrays["y"].astype(np.int64))
    test = ArrayDataset(
        np.ascontiguousarray(arrays["x_test"], dtype=np.float32), arrays["y_test"].astype(np.int64)
    )
    return train, test


BUILTINS: dict[str, Builtin] = {
    "digits": Builtin(
        name="digits",
        description="scikit-learn's 8x8 grey images of handwritten digits (1,797 examples, 10 classes)",
        info=DatasetInfo(
            format="builtin", examples=1797, input_shape=[8, 8], num_classes=10, has_labels=True
        ),
        official_split="a fixed seeded 20% held out (holdout_split)",
        load=_load_digits,
    ),
    "mnist1d": Builtin(
        name="mnist1d",
        description="MNIST-1D (Greydanus 2020), generated offline: sequences of length 40, 10 classes",
        info=DatasetInfo(format="builtin", examples=5000, input_shape=[40], num_classes=10, has_labels=True),
        official_split="the generator's own split: 4,000 train / 1,000 test",
        load=_load_mnist1d,
    ),
}

BUILTIN_INFO: dict[str, DatasetInfo] = {name: builtin.info for name, builtin in BUILTINS.items()}
"""``name -> DatasetInfo`` of every builtin (what the API checks specs against)."""


def load_builtin(name: str, cache_dir: Path) -> tuple[ArrayDataset, ArrayDataset]:
    """``(train, test)`` for a builtin dataset: its official test split."""
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise ValueError(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    return builtin.load(cache_dir)
