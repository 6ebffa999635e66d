"""Jittered copies of inputs, to enlarge a transfer set (``data.augment``, :class:`AugmentSpec`).

NumPy only. Each copy of an input gets Gaussian noise scaled per feature, then a random integer shift along
every axis of the per-example shape, with zero fill.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from distill.spec import AugmentSpec

MAX_ELEMENTS = 2**31
"""The most values (originals and copies together) that :func:`augment_inputs` returns."""

_STD_CHUNK_ELEMENTS = 1 << 22


def augment_inputs(x: np.ndarray, spec: AugmentSpec, seed: int) -> np.ndarray:
    """``x`` ``[n, *shape]`` -> float32 ``[(1 + spec.copies) * n, *shape]``: the originals, then the copies.

    Layout: rows ``0..n-1`` are the originals (unchanged, as float32); rows ``k*n .. (k+1)*n - 1`` are copy
    ``k`` (``k = 1..copies``) of every input, in the original order, so copy ``k`` of input ``i`` is row
    ``k*n + i``.

    A copy of an input is:

    1. the input plus Gaussian noise whose std is ``spec.noise`` times that feature's std over the whole of
       ``x`` (a feature is one position of ``shape``; a constant feature gets no noise);
    2. shifted by a random integer in ``[-spec.shift, spec.shift]`` along each axis of ``shape`` (every
       axis: a ``[length]`` input along its length, ``[h, w]`` along both), drawn independently per copy,
       input and axis. A positive shift moves content to higher indices; vacated positions are zero and
       content pushed past the edge is dropped (no wrap-around). On an axis of length ``L`` the shift is
       capped at ``L - 1`` so a copy never becomes all padding.

    The result depends only on ``x``, ``spec`` and ``seed``. With ``noise == 0`` and ``shift == 0`` the copies
    equal the originals exactly.

    Raises ``ValueError`` if ``x`` is not ``[n, ...]`` with at least one feature, or if the result would
    hold more than :data:`MAX_ELEMENTS` values.
    """
    x = np.asarray(x)
    if x.ndim < 2 or any(d == 0 for d in x.shape[1:]):
        raise ValueError(f"augment: inputs must be [examples, *input_shape]; got shape {list(x.shape)}")
    n = int(x.shape[0])
    shape = tuple(int(d) for d in x.shape[1:])
    per_input = math.prod(shape)
    copies = int(spec.copies)
    total = n * per_input * (copies + 1)
    if total > MAX_ELEMENTS:
        fit = MAX_ELEMENTS // max(n * per_input, 1) - 1
        hint = (
            f"use fewer copies (at most {fit}) or fewer inputs"
            if fit >= 1
            else "use fewer inputs: even one copy of each is too many"
        )
        raise ValueError(
            f"augment: {copies} copies of {n} inputs of shape {list(shape)} would make {total:,} values, "
            f"more than the {MAX_ELEMENTS:,} (2^31) allowed; {hint}"
        )

    base = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((n * (copies + 1), *shape), dtype=np.float32)
    out[:n] = base
    if n == 0:
        return out
    rng = np.random.default_rng(seed)
    scale = (spec.noise * _feature_std(base)).astype(np.float32) if spec.noise > 0 else None
    limits = [min(int(spec.shift), d - 1) for d in shape]
    shift_axes = [axis for axis, limit in enumerate(limits, start=1) if limit > 0]

    for k in range(1, copies + 1):
        target = out[k * n : (k + 1) * n]
        if scale is None:
            block = base
        else:
            block = rng.standard_normal(base.shape, dtype=np.float32)
            block *= scale
            block += base
        if not shift_axes:
            target[...] = block
            continue
        for j, axis in enumerate(shift_axes):
            limit = limits[axis - 1]
            shifts = rng.integers(-limit, limit + 1, size=n)
            dst = target if j == len(shift_axes) - 1 else np.empty_like(base)
            _shift_axis(block, shifts, axis, dst)
            block = dst
    return out


def _feature_std(x: np.ndarray) -> np.ndarray:
    """Population std of each feature (position of the example shape) over the examples, in float64."""
    n = x.shape[0]
    mean = x.sum(axis=0, dtype=np.float64) / n
    sq = np.zeros(x.shape[1:], dtype=np.float64)
    chunk = max(1, _STD_CHUNK_ELEMENTS // max(1, math.prod(x.shape[1:])))
    for start in range(0, n, chunk):
        d = x[start : start + chunk].astype(np.float64) - mean
        sq += np.einsum("i...,i...->...", d, d)
    result: np.ndarray = np.sqrt(sq / n)
    return result


def _shift_axis(src: np.ndarray, shifts: np.ndarray, axis: int, dst: np.ndarray) -> None:
    """``dst[i]`` = ``src[i]`` moved by ``shifts[i]`` positions along ``axis`` (>= 1), zero-filled."""
    dst.fill(0)
    length = src.shape[axis]
    for value in np.unique(shifts):
        s = int(value)
        rows = np.flatnonzero(shifts == value)
        src_index: list[slice] = [slice(None)] * (src.ndim - 1)
        dst_index: list[slice] = [slice(None)] * (src.ndim - 1)
        if s >= 0:
            src_index[axis - 1], dst_index[axis - 1] = slice(0, length - s), slice(s, length)
        else:
            src_index[axis - 1], dst_index[axis - 1] = slice(-s, length), slice(0, length + s)
        dst_key: tuple[Any, ...] = (rows, *dst_index)
        src_key: tuple[Any, ...] = (rows, *src_index)
        dst[dst_key] = src[src_key]


__all__ = ["MAX_ELEMENTS", "augment_inputs"]
