"""Which device a hardware profile means on this machine (auto: CUDA when one is visible)."""

from __future__ import annotations

import torch

from schemas.hardware import Hardware


def resolve_device(hardware: Hardware) -> torch.device:
    if hardware.device == "cuda" or (hardware.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
