"""distill.datasets.builtins: the registry of builtin datasets, their loaders and official splits."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from distill.datasets import BUILTIN_INFO, BUILTINS, ArrayDataset, builtins
from distill.datasets.builtins import load_builtin
from distill.datasets.split import holdout_split
from distill.spec import BUILTIN_DATASETS, BuiltinData


def test_digits() -> None:
    train, test = load_builtin("digits", Path("/nonexistent"))  # digits needs no cache
    assert len(train) + len(test) == BUILTIN_INFO["digits"].examples
    assert len(test) == round(0.2 * 1797)
    assert train.x.shape[1:] == (8, 8) and train.x.dtype == np.float32
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0
    assert train.y is not None and train.y.dtype == np.int64 and set(train.y.tolist()) == set(range(10))


def test_mnist1d_generated_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Generation is the slow part (seconds); generate once and check the cache is used the second time.
    np.random.seed(123)
    random.seed(123)
    train, test = load_builtin("mnist1d", tmp_path)
    assert (np.random.random(), random.random()) == _after_seed(123)  # global RNGs untouched
    assert (len(train), len(test)) == (4000, 1000)
    assert train.x.shape == (4000, 40) and train.x.dtype == np.float32
    assert test.y is not None and test.y.dtype == np.int64 and set(test.y.tolist()) == set(range(10))
    assert (tmp_path / builtins.MNIST1D_CACHE).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    def fail() -> None:
        raise AssertionError("regenerated despite the cache")

    monkeypatch.setattr(builtins, "_generate_mnist1d", fail)
    train2, test2 = load_builtin("mnist1d", tmp_path)
    np.testing.assert_array_equal(train.x, train2.x)
    assert test2.y is not None and test.y.tolist() == test2.y.tolist()


def _after_seed(seed: int) -> tuple[float, float]:
    np.random.seed(seed)
    random.seed(seed)
    return np.random.random(), random.random()


def test_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown built-in"):
        load_builtin("cifar", tmp_path)


def test_the_registry_is_the_one_list_of_builtins() -> None:
    # The spec accepts exactly the registry's names; the API's checks read the registry's descriptions.
    assert tuple(BUILTINS) == BUILTIN_DATASETS
    for name, builtin in BUILTINS.items():
        assert BuiltinData(builtin=name).builtin == name  # type: ignore[arg-type]
        assert builtin.name == name and builtin.description and builtin.official_split
        assert BUILTIN_INFO[name] is builtin.info and builtin.info.kind == "tabular"


def test_holdout_split_is_deterministic_and_disjoint() -> None:
    ds = ArrayDataset(np.arange(100, dtype=np.float32).reshape(50, 2), np.arange(50) % 3)
    rest, held = holdout_split(ds)
    rest2, held2 = holdout_split(ArrayDataset(ds.x.copy(), None if ds.y is None else ds.y.copy()))
    assert len(held) == 10 and len(rest) == 40
    np.testing.assert_array_equal(held.x, held2.x)
    np.testing.assert_array_equal(rest.x, rest2.x)
    ids = set(rest.x[:, 0].tolist()) | set(held.x[:, 0].tolist())
    assert len(ids) == 50
    assert held.y is not None and held.y.tolist() == [int(v) // 2 % 3 for v in held.x[:, 0]]
    small_rest, small_held = holdout_split(ArrayDataset(np.zeros((2, 1), dtype=np.float32)), 0.01)
    assert (len(small_rest), len(small_held)) == (1, 1)
    with pytest.raises(ValueError):
        holdout_split(ArrayDataset(np.zeros((1, 1), dtype=np.float32)))
    with pytest.raises(ValueError):
        holdout_split(ds, 1.0)


def test_builtin_info() -> None:
    assert BUILTIN_INFO["digits"].input_shape == [8, 8] and BUILTIN_INFO["digits"].examples == 1797
    assert BUILTIN_INFO["mnist1d"].input_shape == [40] and BUILTIN_INFO["mnist1d"].examples == 5000
    assert all(i.num_classes == 10 and i.has_labels for i in BUILTIN_INFO.values())
