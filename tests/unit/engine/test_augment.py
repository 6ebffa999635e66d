"""worker.engine.augment: jittered copies of inputs (noise per feature, zero-filled shifts)."""

from __future__ import annotations

import numpy as np
import pytest

from distill.spec import AugmentSpec
from worker.engine.augment import MAX_ELEMENTS, _shift_axis, augment_inputs


def spec(copies: int = 2, noise: float = 0.0, shift: int = 0) -> AugmentSpec:
    return AugmentSpec(copies=copies, noise=noise, shift=shift)


@pytest.mark.parametrize("shape", [(7, 5), (7, 6, 6), (7, 2, 5, 5)])
def test_shapes_count_and_originals_first(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape)  # float64 in, float32 out
    out = augment_inputs(x, spec(copies=3, noise=0.3, shift=1), seed=0)
    assert out.dtype == np.float32 and out.shape == (7 * 4, *shape[1:])
    np.testing.assert_array_equal(out[:7], x.astype(np.float32))
    assert not np.array_equal(out[7:14], out[:7])


def test_deterministic_given_seed() -> None:
    x = np.random.default_rng(1).standard_normal((20, 8, 8)).astype(np.float32)
    s = spec(copies=2, noise=0.5, shift=2)
    a, b = augment_inputs(x, s, seed=7), augment_inputs(x, s, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment_inputs(x, s, seed=8))


def test_no_noise_no_shift_gives_exact_copies() -> None:
    x = np.arange(24, dtype=np.int64).reshape(4, 2, 3)
    out = augment_inputs(x, spec(copies=3), seed=0)
    assert out.shape == (16, 2, 3)
    for k in range(4):
        np.testing.assert_array_equal(out[4 * k : 4 * (k + 1)], x.astype(np.float32))


def test_shift_axis_moves_content_with_zero_fill() -> None:
    src = np.array([[1, 2, 3, 4, 5]] * 4, dtype=np.float32)
    dst = np.full_like(src, -1.0)
    _shift_axis(src, np.array([2, -1, 0, -4]), 1, dst)
    assert dst.tolist() == [[0, 0, 1, 2, 3], [2, 3, 4, 5, 0], [1, 2, 3, 4, 5], [5, 0, 0, 0, 0]]
    img = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3)
    out = np.empty_like(img)
    _shift_axis(img, np.array([1]), 2, out)  # along the width only
    assert out[0].tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]


def test_shift_moves_a_pixel_within_range_on_every_axis() -> None:
    x = np.zeros((200, 9, 9), dtype=np.float32)
    x[:, 4, 4] = 1.0
    out = augment_inputs(x, spec(copies=2, shift=2), seed=3)[200:]
    offsets = []
    for img in out:
        (r,), (c,) = np.nonzero(img == 1.0)
        assert np.count_nonzero(img) == 1  # moved, not smeared or wrapped
        offsets.append((int(r) - 4, int(c) - 4))
    rows, cols = zip(*offsets, strict=True)
    assert set(rows) == set(range(-2, 3)) and set(cols) == set(range(-2, 3))


def test_shift_zero_fills_instead_of_wrapping() -> None:
    x = np.ones((300, 10), dtype=np.float32)
    out = augment_inputs(x, spec(copies=1, shift=3), seed=0)[300:]
    seen = set()
    for row in out:
        k = int(10 - row.sum())  # zeros introduced = |shift|
        assert 0 <= k <= 3
        if k:
            # the zeros sit at one end: shifted right -> leading zeros, left -> trailing zeros
            lead = row[:k].sum() == 0 and row[k:].all()
            trail = row[-k:].sum() == 0 and row[:-k].all()
            assert lead or trail
            seen.add(k if lead else -k)
    assert seen == {-3, -2, -1, 1, 2, 3}


def test_shift_capped_by_axis_length() -> None:
    x = np.random.default_rng(0).standard_normal((10, 1, 4)).astype(np.float32)
    out = augment_inputs(x, spec(copies=2, shift=10), seed=0)
    # an axis of length 1 never shifts; on length 4 at most 3, so a value always survives
    assert all(np.count_nonzero(row) >= 1 for row in out)


def test_noise_scaled_per_feature() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    x = np.stack([rng.normal(0, 1, n), rng.normal(5, 10, n), np.full(n, 3.0)], axis=1).astype(np.float32)
    out = augment_inputs(x, spec(copies=2, noise=0.5), seed=1)
    diff = out[n:] - np.concatenate([x, x])
    std = diff.std(axis=0)
    np.testing.assert_allclose(std[:2], [0.5 * x[:, 0].std(), 0.5 * x[:, 1].std()], rtol=0.05)
    assert std[2] == 0.0  # a constant feature gets no noise
    assert abs(diff[:, 1].mean()) < 0.3


def test_memory_guard_suggests_fewer_copies() -> None:
    x = np.broadcast_to(np.zeros(1, dtype=np.float32), (2**25, 2))  # 2^26 values, never materialised
    with pytest.raises(ValueError, match=r"at most 31\)"):
        augment_inputs(x, spec(copies=32), seed=0)
    huge = np.broadcast_to(np.zeros(1, dtype=np.float32), (2**30 + 1, 2))
    with pytest.raises(ValueError, match="fewer inputs"):
        augment_inputs(huge, spec(copies=1), seed=0)
    assert MAX_ELEMENTS == 2**31


def test_rejects_bad_shapes_and_handles_empty() -> None:
    with pytest.raises(ValueError, match="examples"):
        augment_inputs(np.zeros(5), spec(), seed=0)
    with pytest.raises(ValueError, match="examples"):
        augment_inputs(np.zeros((5, 0)), spec(), seed=0)
    assert augment_inputs(np.zeros((0, 3)), spec(), seed=0).shape == (0, 3)
