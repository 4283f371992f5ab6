"""On-policy batches: the text stays, the student's sample follows it, and only positions predicting a sampled
token are scored; a run with them learns and resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from logits_runs import REPO, TWIN, evals, short, train
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM

from components.data.texts import TextCollator
from components.losses.logit_losses import IGNORED
from recipe_runner.trainer.on_policy import continue_with_student
from schemas.stages import OnPolicy

EOS = 3


def _student() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=32,
        vocab_size=20, eos_token_id=EOS,
    )  # fmt: skip
    return Qwen2ForCausalLM(config)


def test_the_text_is_kept_and_only_positions_predicting_sampled_tokens_are_scored() -> None:
    texts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    batch = TextCollator(pad_id=0)([{"index": i, "student_ids": ids} for i, ids in enumerate(texts)])
    spec = OnPolicy(fraction=1.0, max_new_tokens=4)
    torch.manual_seed(1)
    out = continue_with_student(_student(), batch, spec, max_length=8, pad=0, eos=EOS)
    lengths = out.student_mask.sum(1).tolist()
    kept = [4, 2]  # the first text is cut to leave room for 4 sampled tokens within max_length 8
    for row, (text, keep) in enumerate(zip(texts, kept, strict=True)):
        assert out.student_ids[row, :keep].tolist() == text[:keep]
        sampled = out.student_ids[row, keep : lengths[row]].tolist()
        assert 1 <= len(sampled) <= 4
        assert EOS not in sampled[:-1]  # a sample ends at its first end-of-text
        assert out.student_ids[row, lengths[row] :].eq(0).all()
    assert out.scored is not None and out.scored.shape == out.labels.shape == (sum(lengths),)
    scored_per_row = out.scored.split(lengths)
    for row, keep in enumerate(kept):
        # position keep-1 predicts the first sampled token; the last position predicts nothing sampled
        assert scored_per_row[row].nonzero().flatten().tolist() == list(range(keep - 1, lengths[row] - 1))
    assert out.labels.eq(IGNORED).all()  # no cross-entropy on the student's own output
    assert out.student_tokens == sum(lengths)


def test_a_text_with_the_teachers_answer_is_continued_from_its_prompt() -> None:
    """GKD on written answers: the student answers the prompt itself, in place of the teacher's answer."""
    items = [
        {"index": 0, "student_ids": [5, 6, 7, 8, 9, 10], "answer_start": 2},
        {"index": 1, "student_ids": [11, 12, 13, 14], "answer_start": 3},
    ]
    batch = TextCollator(pad_id=0)(items)
    assert batch.prompt_lengths is not None and batch.prompt_lengths.tolist() == [2, 3]
    torch.manual_seed(1)
    out = continue_with_student(_student(), batch, OnPolicy(fraction=1.0, max_new_tokens=4), 8, pad=0, eos=EOS)
    lengths = out.student_mask.sum(1).tolist()
    scored_per_row = out.scored.split(lengths)
    for row, item in enumerate(items):
        start = item["answer_start"]
        assert out.student_ids[row, :start].tolist() == item["student_ids"][:start]
        assert 1 <= lengths[row] - start <= 4  # the student's answer, not the teacher's
        assert scored_per_row[row].nonzero().flatten().tolist() == list(range(start - 1, lengths[row] - 1))
    assert out.prompt_lengths is None


@pytest.mark.slow
def test_on_policy_training_learns_and_resumes_exactly(tmp_path: Path) -> None:
    on_policy = ["stages.0.on_policy={fraction: 0.5, max_new_tokens: 8}", "stages.0.losses=[{type: jsd}]", TWIN]
    learning = tmp_path / "learning"
    train([f"output.dir={learning}", "stages.0.epochs=2", *on_policy])
    first, last = evals(learning)[0], evals(learning)[-1]
    assert last["eval/forward_kl"] < 0.9 * first["eval/forward_kl"]

    train(short(tmp_path / "whole", 6, *on_policy))
    resumed = tmp_path / "resumed"
    train(short(resumed, 6, *on_policy))
    shutil.rmtree(resumed / "checkpoints" / "step-00000006")
    shutil.rmtree(resumed / "export")
    train(short(resumed, 6, *on_policy), resume=True)
    whole, again = (
        load_file(tmp_path / "whole" / "export" / "model.safetensors"),
        load_file(resumed / "export" / "model.safetensors"),
    )
    for name in whole:
        torch.testing.assert_close(whole[name], again[name])


def test_on_policy_mixes_with_the_teachers_written_answers(tmp_path: Path) -> None:
    """GKD's mixed data: half the micro-batches are the teacher's answers (written once), half the student's."""
    recipe = REPO / "recipes" / "examples" / "qwen_sequence_kd_tiny.yaml"
    run_dir = tmp_path / "run"
    overrides = [
        f"teacher.answers.dir={tmp_path / 'answers'}",
        f"output.dir={run_dir}",
        f"teacher.tokenizer={REPO / 'data' / 'tokenizers' / 'tiny_qwen'}",
        "stages.0.on_policy={fraction: 0.5, max_new_tokens: 8}",
        "stages.0.losses=[{type: jsd}, {type: cross_entropy, weight: 0.1}]",
        "stages.0.epochs=null",
        "stages.0.steps=12",
        "output.eval_every_steps=12",
        "data.train.limit=48",
        "data.eval.limit=16",
    ]
    train(overrides, recipe=recipe)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [row for row in rows if "eval/terms/jsd" in row][-1]
    assert final["eval/terms/jsd"] > 0 and final["eval/terms/cross_entropy"] > 0
    assert (run_dir / "export" / "model.safetensors").is_file()
