"""A cheap look at a safetensors file (its header and its size, no tensor data) to tell a damaged file early.

A truncated or overwritten file otherwise fails deep inside a load, hours into a run, as a raw SafetensorError.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

LENGTH_BYTES = 8
MAX_HEADER_BYTES = 100_000_000  # safetensors refuses larger headers
# Bits per element of every dtype safetensors knows; one it does not know is refused when the file is opened.
ITEM_BITS = {
    **dict.fromkeys(("F4",), 4),
    **dict.fromkeys(("F6_E2M3", "F6_E3M2"), 6),
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 8),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 16),
    **dict.fromkeys(("I32", "U32", "F32"), 32),
    **dict.fromkeys(("I64", "U64", "F64", "C64"), 64),
}


class DamagedFileError(ValueError):
    """What is wrong with the file, in words (the caller names the file and says how to remake it)."""


def _tensor_end(name: str, info: Any, data_bytes: int) -> int:
    """Where the tensor's bytes end in the data section; its declared shape and dtype must fill its span."""
    if not isinstance(info, dict) or not isinstance(info.get("data_offsets"), list) or len(info["data_offsets"]) != 2:
        raise DamagedFileError(f"its header entry for tensor {name!r} is malformed")
    begin, end = info["data_offsets"]
    shape = info.get("shape")
    if not all(isinstance(v, int) and v >= 0 for v in (begin, end)) or end < begin or not isinstance(shape, list):
        raise DamagedFileError(f"its header entry for tensor {name!r} is malformed")
    bits = ITEM_BITS.get(info.get("dtype"))
    if bits is None:
        raise DamagedFileError(f"tensor {name!r} has an unknown dtype {info.get('dtype')!r}")
    if (math.prod(shape) * bits + 7) // 8 != end - begin:
        raise DamagedFileError(f"tensor {name!r} declares shape {shape} but spans {end - begin} bytes")
    if end > data_bytes:
        raise DamagedFileError(
            f"it is cut short: tensor {name!r} needs {end} bytes of data but the file holds {data_bytes}"
        )
    return end


def read_header(path: Path) -> dict[str, Any]:
    """The parsed header (tensor name -> dtype, shape, data_offsets; `__metadata__`), checked against the size.

    Raises DamagedFileError when safetensors would refuse the file or a tensor would read past its end.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(LENGTH_BYTES), "little")
            if size < LENGTH_BYTES:
                raise DamagedFileError(f"it is cut short: {size} bytes, too few for a safetensors file")
            if length > min(size - LENGTH_BYTES, MAX_HEADER_BYTES):
                raise DamagedFileError(
                    f"it is cut short or overwritten: its header claims {length} bytes, the file has {size}"
                )
            raw = handle.read(length)
    except OSError as exc:
        raise DamagedFileError(f"it cannot be read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedFileError("its header is not valid JSON: the file was overwritten or cut short") from None
    if not isinstance(header, dict):
        raise DamagedFileError("its header is not a JSON object")
    data_bytes = size - LENGTH_BYTES - length
    ends = [_tensor_end(name, info, data_bytes) for name, info in header.items() if name != "__metadata__"]
    if max(ends, default=0) != data_bytes:
        raise DamagedFileError(f"it has {data_bytes - max(ends, default=0)} bytes after its last tensor")
    return header
