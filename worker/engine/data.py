"""Built-in datasets and the deterministic held-out split, for the engine's importers.

Both live in the shared package now (:mod:`distill.datasets.builtins`, the one registry of builtins that
the spec, the API and the worker use, and :mod:`distill.datasets.split`).
"""

from __future__ import annotations

from distill.datasets.builtins import MNIST1D_CACHE, load_builtin
from distill.datasets.split import HOLDOUT_SEED, holdout_split

__all__ = ["HOLDOUT_SEED", "MNIST1D_CACHE", "holdout_split", "load_builtin"]
