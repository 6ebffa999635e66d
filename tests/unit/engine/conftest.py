"""Fixtures the engine's tests share: tiny separable data, a callback recorder, MiniLM loaded once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from engine_support import Recorder, three_blobs

from distill.datasets import ArrayDataset


@pytest.fixture
def blobs() -> Callable[[int, int], ArrayDataset]:
    return three_blobs


@pytest.fixture
def recorder() -> Callable[..., Recorder]:
    return Recorder


@pytest.fixture(scope="session")
def minilm() -> tuple[Any, Any]:
    """MiniLM-L6 and its tokenizer, loaded once for every text test."""
    from worker.engine.text import load_minilm

    return load_minilm()
