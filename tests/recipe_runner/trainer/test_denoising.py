"""Denoising: spans masked on the device, the student attending both ways, the teacher reading clean text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from logits_runs import REPO, killed_and_resumed, short, train
from safetensors.torch import load_file

from components.data.texts import TextCollator
from components.losses.logit_losses import IGNORED
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.denoising import corrupt, span_mask
from recipe_runner.trainer.logit_parts import build_logits_model
from recipe_runner.trainer.packing import choose_packing
from schemas.stages import Denoising

RECIPE = REPO / "recipes" / "examples" / "qwen3_denoising_tiny.yaml"
MASK = 7


def test_spans_cover_about_the_density_never_the_first_token_nor_padding() -> None:
    mask = torch.ones(64, 200, dtype=torch.bool)
    mask[1::2, 150:] = False
    spec = Denoising(density=0.15, span=3)
    masked = span_mask(mask, spec.denoisers[0], torch.Generator().manual_seed(0))
    assert not masked[:, 0].any() and not (masked & ~mask).any()
    assert 0.10 < masked.sum().item() / mask.sum().item() < 0.20
    row = masked[0].tolist()
    runs = [len(run) for run in "".join("x" if m else "." for m in row[:-3]).split(".") if run]
    assert min(runs) >= 3  # whole spans, merged where they overlap


def test_the_student_reads_masks_the_teacher_the_text_and_labels_are_the_masked_tokens() -> None:
    ids = [list(range(10, 30)), list(range(40, 52))]
    batch = TextCollator(pad_id=0)([{"index": i, "student_ids": row} for i, row in enumerate(ids)])
    out = corrupt(batch, Denoising(density=0.3, span=2), MASK, torch.Generator().manual_seed(1))
    masked = (out.student_ids == MASK) & batch.student_mask
    assert masked.any()
    assert torch.equal(out.teacher_ids, batch.student_ids)
    assert torch.equal(out.student_ids[~masked], batch.student_ids[~masked])
    real = batch.student_ids[batch.student_mask]
    following = torch.cat([real[1:], real[:1]])  # next token in the flattened order (wrong only at row ends)
    scored = out.scored.nonzero().flatten()
    assert torch.equal(out.labels[scored], following[scored])
    assert out.labels[~out.scored].eq(IGNORED).all()
    assert out.scored.sum() == masked.sum()  # one scored position per masked token


def _twin(bidirectional: bool):
    overrides = [f"student.bidirectional={str(bidirectional).lower()}"]
    if not bidirectional:
        overrides.append("stages.0.denoising=null")
    recipe = load_recipe(RECIPE, overrides, check=False).recipe
    return recipe, build_logits_model(recipe, "cpu").eval()


def _early_positions_see_a_later_change(model) -> bool:
    """Whether changing the last token of the first text changes the outputs at its first four positions (the
    other, padded text never changes)."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 0, 0]])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    changed = ids.clone()
    changed[0, 5] = 11
    with torch.no_grad():
        before, after = model(ids, mask), model(changed, mask)
    assert torch.equal(before[6:], after[6:])
    return not torch.allclose(before[:4], after[:4])


@pytest.mark.parametrize("bidirectional", [True, False])
def test_a_bidirectional_student_sees_later_tokens_and_a_causal_one_does_not(bidirectional: bool) -> None:
    _, model = _twin(bidirectional)
    assert _early_positions_see_a_later_change(model) == bidirectional


def test_packed_bidirectional_rows_equal_padded_ones() -> None:
    recipe, model = _twin(True)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 0, 0]])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    with torch.no_grad():
        padded = model(ids, mask)
        packing = recipe.hardware.model_copy(update={"packed_sequences": True})
        choose_packing(model, recipe.model_copy(update={"hardware": packing}), torch.device("cpu"))
        packed = model(ids, mask)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_denoising_learns_the_masked_tokens_and_resumes_with_the_same_spans(tmp_path: Path) -> None:
    learning = tmp_path / "learning"
    train([f"output.dir={learning}", "stages.0.epochs=1"], recipe=RECIPE)
    rows = [json.loads(line) for line in (learning / "metrics.jsonl").read_text().splitlines()]
    ce = [row["eval/cross_entropy"] for row in rows if "eval/cross_entropy" in row]
    assert ce[-1] < 0.9 * ce[0]
    assert json.loads((learning / "export" / "distilled.json").read_text())["bidirectional"] is True
    result = CliRunner().invoke(main, ["infer", str(RECIPE), "--set", f"output.dir={learning}", "--prompt", "a"])
    assert result.exit_code == 1 and "trains a bidirectional encoder, which continues no text" in result.output

    train(short(tmp_path / "whole", 6), recipe=RECIPE)
    resumed = tmp_path / "resumed"
    train(short(resumed, 6), recipe=RECIPE)
    killed_and_resumed(resumed, short(resumed, 6), recipe=RECIPE)
    whole, again = (load_file(path / "export" / "model.safetensors") for path in (tmp_path / "whole", resumed))
    for name in whole:
        torch.testing.assert_close(whole[name], again[name])


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gpt2"])
def test_other_architectures_attend_both_ways_too(model_type: str) -> None:
    """The padding-only 4D mask is taken as it is by transformers' other decoder families, not only Qwen's."""
    config = {"model_type": model_type, "vocab_size": 2000}
    if model_type == "gpt2":
        config.update(n_embd=32, n_layer=2, n_head=4)
    else:
        config.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        config.update(intermediate_size=64)
    overrides = [f"student.config={json.dumps(config)}", f"teacher.config={json.dumps(config)}"]
    recipe = load_recipe(RECIPE, overrides, check=False).recipe
    assert _early_positions_see_a_later_change(build_logits_model(recipe, "cpu").eval())


def test_infer_refuses_a_bidirectional_export_given_by_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(short(run_dir, 2), recipe=RECIPE)
    logits = REPO / "recipes" / "examples" / "qwen_logits_tiny.yaml"
    args = ["infer", str(logits), "--checkpoint", str(run_dir / "export"), "--prompt", "a fox"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "holds a bidirectional encoder (recipe 'qwen3_denoising_tiny', trained by denoising)" in result.output


def test_the_suffix_denoiser_masks_the_end_of_each_text_and_never_its_first_token_or_padding() -> None:
    from recipe_runner.trainer.denoising import suffix_mask
    from schemas.stages import SuffixDenoiser

    mask = torch.zeros(3, 10, dtype=torch.bool)
    for row, length in enumerate([10, 4, 1]):
        mask[row, :length] = True
    masked = suffix_mask(mask, SuffixDenoiser(type="suffix", fraction=0.25))
    assert masked.tolist()[0] == [False] * 7 + [True] * 3  # ceil(2.5) tokens of 10
    assert masked.tolist()[1] == [False] * 3 + [True] + [False] * 6  # at least one
    assert not masked[2].any()  # a one-token text has nothing a position could predict


def test_each_text_is_corrupted_by_one_denoiser_of_the_mixture_drawn_by_its_share() -> None:
    from recipe_runner.trainer.denoising import denoising_mask

    mask = torch.ones(600, 40, dtype=torch.bool)
    spec = Denoising(
        mixture=[
            {"type": "spans", "density": 0.15, "span": 3, "share": 2},
            {"type": "suffix", "fraction": 0.5, "share": 1},
        ]
    )
    masked = denoising_mask(mask, spec, torch.Generator().manual_seed(3))
    suffix = masked[:, 20:].all(1) & ~masked[:, :20].any(1)
    assert 0.25 < suffix.float().mean().item() < 0.42  # a share of 1 in 3
    spans = masked[~suffix]
    assert 0.08 < spans.float().mean().item() < 0.22 and not spans[:, 20:].all(1).any()
    again = denoising_mask(mask, spec, torch.Generator().manual_seed(3))
    assert torch.equal(masked, again)  # every draw from the generator a checkpoint keeps


def test_one_denoiser_or_a_mixture_not_both() -> None:
    with pytest.raises(ValueError, match="either density and span"):
        Denoising(span=4, mixture=[{"type": "suffix"}])
    assert Denoising().denoisers[0].model_dump() == {"type": "spans", "density": 0.15, "span": 3, "share": 1.0}
    from recipe_runner.trainer.denoising import denoising_mask

    tiny = Denoising(mixture=[{"type": "suffix", "share": 1e-50}, {"type": "suffix", "fraction": 0.5, "share": 1e-50}])
    assert denoising_mask(torch.ones(4, 8, dtype=torch.bool), tiny).any()  # shares are relative, however small
