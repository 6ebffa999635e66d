"""Built-in datasets and the deterministic held-out split."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np

from distill.datasets import ArrayDataset

MNIST1D_CACHE = "mnist1d-v1.npz"
HOLDOUT_SEED = 0


def load_builtin(name: str, cache_dir: Path) -> tuple[ArrayDataset, ArrayDataset]:
    """``(train, test)`` for a built-in dataset: the official test split, or :func:`holdout_split`."""
    if name == "mnist1d":
        return _load_mnist1d(cache_dir)
    if name == "digits":
        return holdout_split(_load_digits())
    raise ValueError(f"unknown built-in dataset {name!r}; choose 'digits' or 'mnist1d'")


def holdout_split(ds: ArrayDataset, fraction: float = 0.2) -> tuple[ArrayDataset, ArrayDataset]:
    """``(rest, held_out)``: a fixed (seed 0) random ``fraction`` held out, the same for every job.

    Both parts keep the original order of their examples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    n = len(ds)
    if n < 2:
        raise ValueError(f"cannot hold out part of a dataset with {n} example(s); need at least 2")
    n_held = min(max(round(n * fraction), 1), n - 1)
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    held = np.sort(perm[:n_held])
    rest = np.sort(perm[n_held:])
    return ds.subset(rest), ds.subset(held)


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return ArrayDataset(np.ascontiguousarray(x), y)


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
