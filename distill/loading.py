"""``distill.load_model``: a downloaded student as a ready ``torch.nn.Module``, outside Distill.

Needs torch and safetensors only (``pip install 'distill[torch]'``), not the worker: the architecture is
rebuilt with :func:`distill.nets.build_model` from the file's own metadata (``distill.config``), the weights
are read with ``safetensors`` (never unpickled) and loaded strictly, and the module is put in eval mode.

```python
import distill, torch
model = distill.load_model("job_…/model.safetensors")
print(model.predict(torch.randn(4, *model.input_shape)))   # class names, one per example
```

Preprocessing travels inside the module: whatever the model file's layers do to raw inputs (per-feature
standardisation, when the engine records it, is a layer of ``build_model``'s stack) happens in ``forward``,
so the module takes the same raw features the job was trained on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file
    from torch import nn
except ImportError as exc:  # the light client without the model extra
    raise ImportError(
        f"distill.load_model needs torch and safetensors ({exc.name} is missing): "
        "pip install 'distill[torch]'"
    ) from exc

from distill.modelfile import FORMAT_KEY, TEXT_FORMAT_VERSION, config_from_metadata
from distill.nets import build_model
from distill.spec import StoredModelConfig

CLASS_NAMES_KEY = "distill.class_names"
"""Optional metadata: a JSON list of the class names, index by index. Without it classes are "0", "1"..."""

__all__ = ["CLASS_NAMES_KEY", "LoadedModel", "load_model"]


class LoadedModel(nn.Module):
    """A Distill student ready for inference: ``forward(x)`` gives logits ``[n, num_classes]`` for raw
    inputs ``[n, *input_shape]`` (float32); :meth:`predict` and :meth:`predict_proba` add the rest."""

    def __init__(self, net: nn.Module, config: StoredModelConfig, class_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.input_shape: tuple[int, ...] = tuple(config.input_shape)
        self.class_names: list[str] = class_names

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected inputs of shape [n, {', '.join(map(str, self.input_shape))}], got {list(x.shape)}"
            )
        logits: torch.Tensor = self.net(x.float())
        return logits

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[n, num_classes]`` (softmax of the logits)."""
        return torch.softmax(self(x), dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> list[str]:
        """The top class's name for each example."""
        return [self.class_names[int(i)] for i in self(x).argmax(dim=1)]

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros of the right shape, e.g. to trace or export the model (``torch.onnx.export``)."""
        return torch.zeros(batch, *self.input_shape)


def _class_names(metadata: dict[str, str], num_classes: int) -> list[str]:
    raw = metadata.get(CLASS_NAMES_KEY)
    if raw is None:
        return [str(i) for i in range(num_classes)]
    try:
        names = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata {CLASS_NAMES_KEY!r} is not valid JSON ({exc})") from exc
    if not isinstance(names, list) or len(names) != num_classes:
        raise ValueError(f"metadata {CLASS_NAMES_KEY!r} must list {num_classes} class names")
    return [str(name) for name in names]


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a Distill model file (a job's ``model.safetensors``) as a :class:`LoadedModel` in eval mode.

    Raises ``ValueError`` saying what is wrong for a file that is not a Distill tabular model; text
    students (``distill.format`` ``text-1``) need transformers and load with the server extra.
    """
    source = Path(path)
    with safe_open(str(source), framework="pt") as handle:
        metadata: dict[str, Any] = handle.metadata() or {}
    if metadata.get(FORMAT_KEY) == TEXT_FORMAT_VERSION:
        raise ValueError(
            f"{source} is a text model (BERT-style encoder + tokenizer): it needs transformers; install "
            "'distill[server]' and use worker.engine.text.load_text_model, or use its model.onnx export "
            "with onnxruntime"
        )
    config = config_from_metadata(metadata)
    net = build_model(config)
    state = load_file(str(source), device="cpu")
    expected = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        wrong = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
        missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        raise ValueError(
            f"{source}: the weights do not match the architecture in its metadata "
            f"(missing: {missing}, unexpected: {unexpected}, wrong shape: {wrong})"
        )
    net.load_state_dict(state)
    model = LoadedModel(net, config, _class_names(metadata, config.num_classes))
    return model.to(device).eval()
