"""Save a model as a self-describing ``.safetensors`` file, and load one (see :mod:`distill.modelfile`)."""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from distill.modelfile import FORMAT_KEY, FORMAT_VERSION, METADATA_KEY, ModelFileError, inspect_model_file
from distill.spec import StoredModelConfig
from worker.engine.models import build_model


def model_to_safetensors(model: nn.Module, cfg: StoredModelConfig) -> bytes:
    """The model file's bytes: the ``state_dict`` (contiguous CPU tensors) with the config as metadata."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    metadata = {FORMAT_KEY: FORMAT_VERSION, METADATA_KEY: cfg.model_dump_json()}
    return safetensors.torch.save(tensors, metadata=metadata)


def load_model(path: Path) -> tuple[nn.Module, StoredModelConfig]:
    """Build the model a file describes and load its weights (float32, CPU, eval mode).

    Raises :class:`ModelFileError` when the file is not a Distill model or its tensors do not match the
    architecture its metadata declares.
    """
    cfg, _ = inspect_model_file(path)
    model = build_model(cfg)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        state = safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # inspect_model_file has checked the header; this is a damaged payload
        raise ModelFileError(f"cannot read the model's tensors: {exc}") from exc

    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"the tensors do not match the model config in the metadata ({cfg.model.arch}, "
            f"input_shape {cfg.input_shape}, {cfg.num_classes} classes): "
            f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
        )
    for name, shape in expected.items():
        actual = tuple(state[name].shape)
        if actual != shape:
            raise ModelFileError(
                f"tensor {name!r} has shape {list(actual)} but the model config in the metadata needs "
                f"{list(shape)}"
            )
    model.load_state_dict({name: t.to(torch.float32) for name, t in state.items()}, strict=True)
    model.eval()
    return model, cfg
