"""Denoising: spans masked as T5 and UL2 draw them, the student attending both ways, the teacher reading clean
text."""

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
from recipe_runner.trainer.denoising import corrupt, denoising_mask, span_positions
from recipe_runner.trainer.logit_parts import build_logits_model
from recipe_runner.trainer.packing import choose_packing
from schemas.stages import Denoising

RECIPE = REPO / "recipes" / "examples" / "qwen3_denoising_tiny.yaml"
MASK = 7


def _runs(row: list[bool]) -> list[int]:
    return [len(run) for run in "".join("x" if m else "." for m in row).split(".") if run]


@pytest.mark.parametrize(("density", "span"), [(0.15, 3), (0.5, 12), (0.5, 32), (0.9, 10)])
def test_spans_mask_the_density_in_spans_of_the_mean_length_never_the_first_token_nor_padding(density, span) -> None:
    """T5's corruption: round(density x maskable) tokens in round(that / span) spans that never touch; a
    per-token coin instead masked 0.40 for (0.5, 12) and 0.61 for (0.9, 10), in merged spans."""
    mask = torch.zeros(64, 520, dtype=torch.bool)
    mask[0::2, :512] = True
    mask[1::2, :300] = True
    masked = denoising_mask(mask, Denoising(density=density, span=span), torch.Generator().manual_seed(0))
    assert not masked[:, 0].any() and not (masked & ~mask).any()
    for row in range(64):
        maskable = int(mask[row].sum()) - 1
        assert int(masked[row].sum()) == int(maskable * density + 0.5)
        runs = _runs(masked[row].tolist())
        assert len(runs) == max(1, int(int(maskable * density + 0.5) / span + 0.5))
    lengths = [run for row in masked.tolist() for run in _runs(row)]
    assert abs(sum(lengths) / len(lengths) - span) < 0.1 * span


def test_every_text_of_two_tokens_or_more_gets_a_masked_token_and_a_span_longer_than_it_one_span() -> None:
    """Short texts masked nothing in a fifth of the cases before, and a batch with nothing scored crashed."""
    spec = Denoising(density=0.15, span=3).denoisers[0]
    generator = torch.Generator().manual_seed(0)
    for length in range(2, 40):
        for _ in range(20):
            positions = span_positions(length, spec, generator)
            assert positions and 0 not in positions and max(positions) < length
    assert span_positions(1, spec, generator) == []
    long = Denoising(density=0.5, span=200).denoisers[0]
    positions = span_positions(30, long, generator)
    assert len(positions) == 15 and positions == list(range(positions[0], positions[0] + 15))


def test_the_spans_are_drawn_from_the_lengths_the_collator_counted_without_reading_the_device_mask() -> None:
    """On a GPU, reading the lengths from the device mask made every micro-step wait for the one before."""
    batch = TextCollator(pad_id=0)([{"index": i, "student_ids": list(range(1, n + 1))} for i, n in enumerate([9, 5])])
    assert batch.student_lengths == (9, 5)
    spec = Denoising(density=0.5, span=2)
    expected = denoising_mask(batch.student_mask, spec, torch.Generator().manual_seed(3))
    unreadable = torch.empty(batch.student_mask.shape, dtype=torch.bool, device="meta")  # any read of it fails
    with pytest.raises(NotImplementedError):
        unreadable.sum(1).tolist()
    drawn = denoising_mask(unreadable, spec, torch.Generator().manual_seed(3), batch.student_lengths)
    assert drawn.device.type == "meta"
    assert torch.equal(denoising_mask(batch.student_mask, spec, torch.Generator().manual_seed(3), (9, 5)), expected)
    assert corrupt(batch, spec, MASK, torch.Generator()).student_lengths == (9, 5)


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
    assert result.exit_code == 1 and "trains a bidirectional encoder, whose export continues no text" in result.output
    result = CliRunner().invoke(main, ["infer", "--checkpoint", str(learning / "export"), "--prompt", "a"])
    assert result.exit_code == 2 and "holds a bidirectional encoder (recipe 'qwen3_denoising_tiny'" in result.output
    _the_readme_way_reads_a_text_alike_alone_and_beside_a_longer_one(learning / "export")

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
    mask = torch.zeros(3, 10, dtype=torch.bool)
    for row, length in enumerate([10, 4, 1]):
        mask[row, :length] = True
    spec = Denoising(mixture=[{"type": "suffix", "fraction": 0.25}])
    masked = denoising_mask(mask, spec, torch.Generator().manual_seed(0))
    assert masked.tolist()[0] == [False] * 7 + [True] * 3  # ceil(2.5) tokens of 10
    assert masked.tolist()[1] == [False] * 3 + [True] + [False] * 6  # at least one
    assert not masked[2].any()  # a one-token text has nothing a position could predict


def test_each_text_is_corrupted_by_one_denoiser_of_the_mixture_drawn_by_its_share() -> None:
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

    tiny = Denoising(mixture=[{"type": "suffix", "share": 1e-50}, {"type": "suffix", "fraction": 0.5, "share": 1e-50}])
    assert denoising_mask(torch.ones(4, 8, dtype=torch.bool), tiny).any()  # shares are relative, however small


def _the_readme_way_reads_a_text_alike_alone_and_beside_a_longer_one(export: Path) -> None:
    """As README says to load the export: a batch without padding is read both ways too (the default
    allow_is_bidirectional_skip returns no mask for it, and the model then reads it causally)."""
    from transformers import AutoModel
    from transformers.masking_utils import create_bidirectional_mask

    model = AutoModel.from_pretrained(export).eval()

    def states(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        embeds = model.get_input_embeddings()(ids)
        four = create_bidirectional_mask(
            config=model.config, inputs_embeds=embeds, attention_mask=mask, allow_is_bidirectional_skip=False
        )
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=four).last_hidden_state

    text = torch.tensor([[5, 6, 7, 8]])
    alone = states(text, torch.ones_like(text))
    beside = states(torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10]]), torch.tensor([[1] * 4 + [0] * 2, [1] * 6]))
    torch.testing.assert_close(alone[0], beside[0, :4], atol=1e-4, rtol=1e-4)
