"""Distill: distillation as a service.

The package is shared by the API, the workers and the light client. Importing ``distill`` loads nothing
heavy: ``Client``/``DistillError`` (pydantic + httpx) and ``load_model`` (torch + safetensors, when called
for) are resolved on first use, so ``from distill import Client`` works after a client-only install
(``pip install distill``) and never imports torch, Celery, SQLAlchemy or FastAPI.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from distill.client.sdk import Client, DistillError
    from distill.loading import LoadedModel, load_model

_LAZY = {
    "Client": "distill.client.sdk",
    "DistillError": "distill.client.sdk",
    "load_model": "distill.loading",
    "LoadedModel": "distill.loading",
}

__all__ = ["Client", "DistillError", "LoadedModel", "__version__", "load_model"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
