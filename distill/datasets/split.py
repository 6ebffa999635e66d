"""The deterministic held-out split: the same examples held out for every job on the same data."""

from __future__ import annotations

import numpy as np

from distill.datasets.types import ArrayDataset

HOLDOUT_SEED = 0
HOLDOUT_FRACTION = 0.2


def holdout_split(ds: ArrayDataset, fraction: float = HOLDOUT_FRACTION) -> tuple[ArrayDataset, ArrayDataset]:
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
