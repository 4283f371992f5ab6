"""Which device a hardware profile means on this machine (auto: CUDA when one is visible)."""

from __future__ import annotations

import torch

from components.errors import UserFacingError
from schemas.hardware import Hardware


class DeviceUnavailableError(UserFacingError, RuntimeError):
    """The recipe asks for a device this machine does not have."""


def resolve_device(hardware: Hardware) -> torch.device:
    if hardware.device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "hardware.device is cuda but no CUDA device is visible (a CPU-only torch build, or no GPU): "
            "use --set hardware.device=auto (or cpu), or install a CUDA build of torch"
        )
    if hardware.device == "cuda" or (hardware.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")
