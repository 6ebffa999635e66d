"""Tabular architectures (MLP, CNN), built from a :class:`StoredModelConfig`: torch only.

Shared by the worker (which trains them) and the client's model loader (which rebuilds a downloaded
student), so a model file always rebuilds the same module wherever it is read.

Models are plain ``nn.Sequential`` stacks, so parameter names (``"1.weight"``, ...) depend on the config
only: a saved ``state_dict`` loads into ``build_model`` of the same config. Dropout layers are always present
(``p=0`` is a no-op) so that the dropout rate never changes the names. A config with ``standardize``
starts with a :class:`Standardize` layer named ``"standardize"`` (buffers ``standardize.mean`` /
``standardize.std``), so the model takes raw features, in PyTorch and in its ONNX / TorchScript exports;
the other layers keep their names.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from distill.spec import CNNConfig, MLPConfig, Standardization, StoredModelConfig


class AddChannel(nn.Module):
    """``[n, *spatial] -> [n, 1, *spatial]``: a single input channel for the convolutions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature, the statistics stored as buffers (saved with the weights)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float().clone())
        self.register_buffer("std", std.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def fit_standardization(x: np.ndarray, min_std: float = 1e-6) -> Standardization:
    """Per-feature mean and standard deviation of ``x`` (``[n, *shape]``); a constant feature gets std 1."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std = np.where(np.isfinite(std) & (std > min_std), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    return Standardization(mean=mean.tolist(), std=std.tolist())


def build_model(cfg: StoredModelConfig) -> nn.Module:
    """A freshly initialised model (uses torch's global RNG: seed it first for reproducible weights)."""
    if isinstance(cfg.model, MLPConfig):
        net = _build_mlp(cfg.model, cfg.input_shape, cfg.num_classes)
    elif isinstance(cfg.model, CNNConfig):
        net = _build_cnn(cfg.model, cfg.input_shape, cfg.num_classes)
    else:
        raise ValueError(f"{cfg.model.arch} models are text models; they are not built here")
    if cfg.standardize is None:
        return net
    size = math.prod(cfg.input_shape)
    if len(cfg.standardize.mean) != size or len(cfg.standardize.std) != size:
        raise ValueError(
            f"standardize: {len(cfg.standardize.mean)} means and {len(cfg.standardize.std)} standard "
            f"deviations for inputs of shape {cfg.input_shape} ({size} features)"
        )
    shape = list(cfg.input_shape)
    first = Standardize(
        torch.tensor(cfg.standardize.mean).reshape(shape), torch.tensor(cfg.standardize.std).reshape(shape)
    )
    return nn.Sequential(OrderedDict([("standardize", first), *net.named_children()]))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build_mlp(cfg: MLPConfig, input_shape: list[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _build_cnn(cfg: CNNConfig, input_shape: list[int], num_classes: int) -> nn.Sequential:
    if len(input_shape) == 3:  # [channels, height, width]
        in_channels, spatial = input_shape[0], list(input_shape[1:])
        layers: list[nn.Module] = []
    else:  # [length] or [height, width]: one input channel
        in_channels, spatial = 1, list(input_shape)
        layers = [AddChannel()]
    conv: type[nn.Conv1d] | type[nn.Conv2d] = nn.Conv1d if len(spatial) == 1 else nn.Conv2d
    pool: type[nn.MaxPool1d] | type[nn.MaxPool2d] = nn.MaxPool1d if len(spatial) == 1 else nn.MaxPool2d
    avg: type[nn.AdaptiveAvgPool1d] | type[nn.AdaptiveAvgPool2d] = (
        nn.AdaptiveAvgPool1d if len(spatial) == 1 else nn.AdaptiveAvgPool2d
    )
    k = cfg.kernel_size
    for channels in cfg.channels:
        layers += [conv(in_channels, channels, k, padding=k // 2), nn.ReLU()]
        spatial = [s + 2 * (k // 2) - k + 1 for s in spatial]  # grows by 1 for even kernels
        if min(spatial) >= 2:  # halve (rounding up); a size-1 map is left alone
            layers.append(pool(2, ceil_mode=True))
            spatial = [math.ceil(s / 2) for s in spatial]
        else:
            layers.append(nn.Identity())
        in_channels = channels
    layers += [avg(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(in_channels, num_classes)]
    return nn.Sequential(*layers)
