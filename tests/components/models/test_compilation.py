"""Compiling the repeated blocks: same numbers as eager at any length, one graph per block class, weights untouched."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch._dynamo.utils import counters

from components.models.compilation import (
    RECOMPILE_LIMIT,
    compile_for_varied_lengths,
    compile_wanted,
    repeated_blocks,
)
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import build_distill_model
from schemas.hardware import Hardware

pytestmark = pytest.mark.slow


def _inputs(length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 500, (2, length), generator=generator)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, length // 2 :] = False
    return ids, mask


def test_compiled_model_matches_eager_on_changing_lengths_with_one_graph_per_block_class(
    tiny_recipe_path, tiny_overrides
):
    # One bolt-on layer of another class than the student's blocks: a graph of its own (a cold CPU compile costs
    # seconds a graph, which CI pays on every run).
    one_layer = "bolt_on.layers=[{type: mlp, hidden_dims: [128], out_dim: 64, activation: silu, layer_norm: true}]"
    recipe = load_recipe(tiny_recipe_path, [*tiny_overrides, one_layer]).recipe
    model = build_distill_model(recipe, "cpu", teacher_width=64).eval()
    assert model.student.config.use_cache is False  # no KV cache built in a training forward
    lengths = (7, 13, 29)
    generator = torch.Generator().manual_seed(0)
    batches = [_inputs(length, generator) for length in lengths]
    with torch.no_grad():
        eager = [model(ids, mask) for ids, mask in batches]
    keys = list(model.state_dict())
    blocks = repeated_blocks(model)
    assert len(blocks) == recipe.student.config["num_hidden_layers"] + len(recipe.bolt_on.layers)

    torch._dynamo.reset()
    counters.clear()
    compiled = compile_for_varied_lengths(model)
    assert compiled is model and list(model.state_dict()) == keys
    graphs = []
    with torch.no_grad():
        for (ids, mask), expected in zip(batches, eager, strict=True):
            torch.testing.assert_close(model(ids, mask), expected, rtol=1e-4, atol=1e-4)
            graphs.append(counters["stats"]["unique_graphs"])
    # Student layers share one graph, each bolt-on layer has its own (at most); new lengths reuse them.
    assert graphs[0] == graphs[-1] <= 1 + len(recipe.bolt_on.layers)


def _block() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(2, 2), torch.nn.ModuleList([torch.nn.LayerNorm(2), torch.nn.LayerNorm(2)])
    )


def test_only_stacks_of_composite_blocks_of_one_class_are_compiled():
    mixed = torch.nn.ModuleList([_block(), torch.nn.ReLU()])
    leaves = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    stack = torch.nn.ModuleList([_block(), _block()])
    model = torch.nn.ModuleDict({"mixed": mixed, "leaves": leaves, "stack": stack})
    # the first member of `mixed` is searched: its norm list holds leaves only; `stack`'s own norms are not listed
    assert repeated_blocks(model) == list(stack)


@pytest.mark.parametrize(
    ("setting", "device_type", "wanted"),
    [("auto", "cuda", True), ("auto", "cpu", False), (True, "cpu", True), (False, "cuda", False)],
)
def test_auto_compiles_on_cuda_only_and_a_set_value_is_kept(setting, device_type: str, wanted: bool):
    assert compile_wanted(setting, device_type) is wanted


def test_hardware_compile_takes_auto_or_a_bool_and_defaults_to_auto():
    assert Hardware().compile == "auto"
    assert Hardware(compile=True).compile is True and Hardware(compile="auto").compile == "auto"
    with pytest.raises(ValidationError) as caught:
        Hardware(compile="sometimes")
    (problem,) = caught.value.errors()  # one problem, not one per member of the union
    assert problem["msg"] == "Value error, expected true, false or auto, got 'sometimes'"


class _Unit(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def test_a_block_compiles_every_variant_a_run_of_many_stages_makes_instead_of_falling_back_to_eager(
    compile_backend,
):
    """Train and eval (grad mode), frozen or trainable inputs, dtypes and a batch of one, across stages: more
    variants of one block's code than torch's default 8, past which it would run the rest uncompiled."""
    # torch's own patch: its config module does not survive monkeypatch's undo
    with torch._dynamo.config.patch(recompile_limit=8, fail_on_recompile_limit_hit=True):  # a failure, not a log
        torch._dynamo.reset()
        stack = torch.nn.ModuleList([_Unit(), _Unit()])
        compile_for_varied_lengths(stack)
        variants = 0
        for dtype in (torch.float32, torch.float64):
            stack.to(dtype)
            for grad, trainable in ((True, True), (True, False), (False, False)):
                for batch in (1, 3):
                    x = torch.randn(batch, 5, 4, dtype=dtype, requires_grad=trainable)
                    with torch.set_grad_enabled(grad):
                        for block in stack:
                            x = block(x)
                    variants += 1
        assert variants == 12
        assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    with torch._dynamo.config.patch(recompile_limit=1000):
        compile_for_varied_lengths(stack)
        assert torch._dynamo.config.recompile_limit == 1000  # a user's higher limit is kept
