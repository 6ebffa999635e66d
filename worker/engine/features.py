"""Intermediate outputs of a model, captured with forward hooks (for the hint and attention losses).

Layers are named as ``model.named_modules()`` names them: ``"1"`` is the second layer of an
``nn.Sequential``, ``"encoder.layers.0.attn"`` a nested one. A layer's captured output is its forward's
output, or the first tensor of a tuple output (what transformer blocks return).

Attention maps: a model "exposes attentions" when it has an attribute ``attention_layers: list[str]``,
the names, in depth order, of the sub-modules whose forward output is an attention-probability tensor
``[batch, heads, queries, keys]`` (e.g. an ``nn.Identity`` applied to the softmax). Capturing the special
name :data:`ATTENTIONS` captures all of them, under the keys ``"@attention.0"``, ``"@attention.1"``, ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

ATTENTIONS = "@attention"
"""The capture name that stands for every attention map of a model that exposes attentions."""
MAX_LISTED = 60
"""At most this many layer names are listed in an error message."""


def layer_names(model: nn.Module) -> list[str]:
    """Every sub-module's name, in ``named_modules()`` order (the model itself, named ``""``, left out)."""
    return [name for name, _ in model.named_modules() if name]


def attention_key(index: int) -> str:
    """The capture key of a model's ``index``-th attention map."""
    return f"{ATTENTIONS}.{index}"


def exposes_attentions(model: nn.Module) -> bool:
    return bool(getattr(model, "attention_layers", None))


def attention_layers(model: nn.Module) -> list[str]:
    """The model's attention-map layers (see the module doc); ``[]`` for a model without attention."""
    names = getattr(model, "attention_layers", None) or []
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError("a model's attention_layers must be a list of layer names")
    return list(names)


def _unknown_layer(name: str, role: str, available: list[str]) -> ValueError:
    listed = ", ".join(repr(n) for n in available[:MAX_LISTED])
    more = f", ... ({len(available) - MAX_LISTED} more)" if len(available) > MAX_LISTED else ""
    if not available:
        return ValueError(f"the {role} has no layer {name!r}: it has no named layers at all")
    return ValueError(f"the {role} has no layer {name!r}; its layers are: {listed}{more}")


def resolve_capture(model: nn.Module, names: Iterable[str], *, role: str = "model") -> dict[str, str]:
    """``{capture key: module name}`` for ``names``; ``ValueError`` naming the layer and listing the
    available ones when a name does not exist. :data:`ATTENTIONS` expands to the attention layers (and
    raises when the model exposes none)."""
    available = layer_names(model)
    known = set(available)
    keys: dict[str, str] = {}
    for name in names:
        if name == ATTENTIONS:
            attention = attention_layers(model)
            if not attention:
                raise ValueError(
                    f"the {role} exposes no attention maps (attention losses need a transformer {role})"
                )
            for i, layer in enumerate(attention):
                if layer not in known:
                    raise _unknown_layer(layer, role, available)
                keys[attention_key(i)] = layer
            continue
        if name not in known:
            raise _unknown_layer(name, role, available)
        keys[name] = name
    return keys


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, list | tuple):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"a captured layer returned {type(output).__name__}, not a tensor")


class FeatureCapture:
    """Forward hooks that keep the latest output of named layers, while the ``with`` block lasts.

    ``outputs`` maps capture keys (see :func:`resolve_capture`) to the tensors of the latest forward,
    still attached to the autograd graph (so a loss on them trains the layers that produced them).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], *, role: str = "model") -> None:
        self.keys = resolve_capture(model, names, role=role)
        self.outputs: dict[str, torch.Tensor] = {}
        self._model = model
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> FeatureCapture:
        self.outputs.clear()
        if not self.keys:  # nothing to capture: no hooks, no module walk (this runs every training step)
            return self
        modules = dict(self._model.named_modules())
        for key, name in self.keys.items():
            self._handles.append(modules[name].register_forward_hook(self._hook(key)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, key: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[key] = _first_tensor(output)

        return hook
