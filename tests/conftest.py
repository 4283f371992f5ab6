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
def compile_backend(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """torch.compile without inductor's code generation, for tests of what compiling changes around our code
    (blocks compiled in place, guards and graph counts, checkpoint keys, resume), not of inductor's kernels, which
    on a CPU say nothing of the CUDA ones a run uses: a cold CPU compile costs seconds a graph and CI starts with
    an empty cache. Compiled numerics stay checked with inductor itself in test_compilation and test_distill_loss.

    "aot_eager" (the default) traces forward and backward through AOT autograd as inductor would, then runs the
    graphs eagerly; `@pytest.mark.compile_backend("eager")` stops after dynamo (a third of the time) for a test that
    needs only the graphs dynamo builds. Returns the backend."""
    import torch

    marker = request.node.get_closest_marker("compile_backend")
    backend = marker.args[0] if marker else "aot_eager"
    inductor = torch.compile

    def compile_without_codegen(*args, **kwargs):
        return inductor(*args, **{**kwargs, "backend": backend})

    monkeypatch.setattr(torch, "compile", compile_without_codegen)
    return backend


@pytest.fixture
def compiled_tiny(compile_backend: str) -> list[str]:
    """The tiny recipe compiled (see `compile_backend`) and checkpointed, with one bolt-on unit: each layer type
    would be graphs of its own."""
    one_unit = "bolt_on.layers=[{type: mlp, hidden_dims: [64], out_dim: 64, activation: gelu}]"
    return ["hardware.compile=true", "hardware.gradient_checkpointing=true", one_unit]


@pytest.fixture
def disk_full_in_safetensors() -> Exception:
    """What safetensors raises when the disk fills under save_file (seen on a full tmpfs): not an OSError."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
