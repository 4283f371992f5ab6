"""Test-wide settings: never reach a model hub, and keep tokenizers single-threaded on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny matrices: one intra-op thread is many times faster than two fighting over 2 shared cores."""
    import torch

    torch.set_num_threads(1)


REPO = Path(__file__).resolve().parent.parent
TINY_RECIPE = REPO / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


@pytest.fixture
def tiny_recipe_path() -> Path:
    return TINY_RECIPE


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Send everything a tiny run writes into the test's own directory."""
    return [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}"]


@pytest.fixture
def compiled_tiny() -> list[str]:
    """The tiny recipe compiled, with a one-unit bolt-on: on a CPU a cold compile costs about 2 s a kernel and each
    bolt-on layer type is graphs of its own; the compiled tests share these settings, so a later one finds the
    earlier one's kernels in inductor's cache."""
    one_unit = "bolt_on.layers=[{type: mlp, hidden_dims: [64], out_dim: 64, activation: gelu}]"
    return ["hardware.compile=true", "hardware.gradient_checkpointing=true", one_unit]


@pytest.fixture
def disk_full_in_safetensors() -> Exception:
    """What safetensors raises when the disk fills under save_file (seen on a full tmpfs): not an OSError."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
