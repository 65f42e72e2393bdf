"""Where computation runs: one resolution of a device name, shared by generation and training."""

from __future__ import annotations

import torch

from synaug.errors import SynaugError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``, checked to exist on this machine.

    ``"auto"`` picks CUDA when a GPU is visible, else the CPU; ``"cuda"`` or ``"cuda:N"``
    without a GPU is an error.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SynaugError(f"unknown device '{device}'; use {DEVICE_HELP}.") from None
    if resolved.type not in ("cpu", "cuda"):
        raise SynaugError(f"device '{device}' is not supported; use {DEVICE_HELP}.")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise SynaugError(f"device '{device}' was asked for but no CUDA GPU is visible here; use device auto or cpu.")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise SynaugError(f"device '{device}' does not exist: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return resolved
