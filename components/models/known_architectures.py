"""Shipped config.json contents of well-known hub models, so `recipe plan` works with no download.

Each file in `known_architectures/` is named `<org>--<name>.json` after the hub id `<org>/<name>`.
Only the architecture matters here (widths, depths, vocabulary); weights always come from a local copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_TABLE_DIR = Path(__file__).with_name("known_architectures")


def _file_for(hub_id: str) -> Path:
    return _TABLE_DIR / f"{hub_id.replace('/', '--')}.json"


def known_hub_ids() -> list[str]:
    """Hub ids the table covers, sorted (for error messages and `did you mean`)."""
    return sorted(path.stem.replace("--", "/", 1) for path in _TABLE_DIR.glob("*.json"))


def known_config_dict(hub_id: str) -> dict[str, Any] | None:
    """The config.json contents of `hub_id`, or None when the table does not cover it (a fresh dict each call)."""
    if hub_id.count("/") != 1:
        return None
    path = _file_for(hub_id)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
