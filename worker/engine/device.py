"""Which torch device the worker trains on."""

from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Asking for CUDA on a machine without it (or for a GPU index it lacks) raises ``ValueError`` rather than
    silently training on the CPU.
    """
    value = setting.strip().lower()
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if value == "cpu":
        return torch.device("cpu")
    if value == "cuda" or value.startswith("cuda:"):
        try:
            device = torch.device(value)
        except RuntimeError as exc:
            raise ValueError(f"invalid device {setting!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
        if not torch.cuda.is_available():
            raise ValueError(f"device {setting!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {setting!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise ValueError(f"unknown device {setting!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
