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
def compiled_tiny(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tiny recipe compiled, for tests of what compiling changes around a run (blocks compiled in place,
    checkpoint keys, resume, graphs built before the clock), not of inductor's kernels: torch.compile goes through
    dynamo and AOT autograd as always but runs the traced graphs eagerly ("aot_eager"). A cold CPU compile costs
    about 2 s a C++ kernel, and CI starts with an empty cache. Compiled numerics are checked with inductor itself
    in test_compilation, test_teacher_cache and test_distill_loss. One bolt-on unit: each layer type would be
    graphs of its own."""
    import torch

    inductor = torch.compile

    def compile_without_codegen(*args, **kwargs):
        return inductor(*args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    one_unit = "bolt_on.layers=[{type: mlp, hidden_dims: [64], out_dim: 64, activation: gelu}]"
    return ["hardware.compile=true", "hardware.gradient_checkpointing=true", one_unit]


@pytest.fixture
def disk_full_in_safetensors() -> Exception:
    """What safetensors raises when the disk fills under save_file (seen on a full tmpfs): not an OSError."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
