"""Small datasets and models that tests make themselves (nothing is fetched)."""

from __future__ import annotations

import io

import numpy as np
from sklearn.datasets import load_digits


def npz_bytes(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    buffer = io.BytesIO()
    if y is None:
        np.savez(buffer, x=x)
    else:
        np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def csv_bytes(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    header = [f"f{i}" for i in range(x.shape[1])] + (["label"] if y is not None else [])
    lines = [",".join(header)]
    for i, row in enumerate(x):
        values = [f"{v:.6g}" for v in row] + ([str(int(y[i]))] if y is not None else [])
        lines.append(",".join(values))
    return ("\n".join(lines) + "\n").encode()


def digits_arrays(flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 in [0, 1]: ``[n, 8, 8]`` (or ``[n, 64]`` when ``flat``)."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    if flat:
        x = x.reshape(len(x), -1)
    return x, digits.target.astype(np.int64)
