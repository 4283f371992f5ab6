"""On-policy batches: the text stays, the student's sample follows it, and only positions predicting a sampled
token are scored; a run with them learns and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from logits_runs import REPO, TWIN, evals, killed_and_resumed, short, train
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


def test_a_text_is_continued_itself_not_after_the_end_of_text_its_tokenizer_appended() -> None:
    """The shipped tokenizers end every text with end-of-text: a sample after it started a new document."""
    texts = [[5, 6, 7, EOS], [11, 12, EOS], [EOS]]
    batch = TextCollator(pad_id=0)([{"index": i, "student_ids": ids} for i, ids in enumerate(texts)])
    torch.manual_seed(1)
    out = continue_with_student(_student(), batch, OnPolicy(fraction=1.0, max_new_tokens=3), 16, pad=0, eos=EOS)
    lengths = out.student_mask.sum(1).tolist()
    scored_per_row = out.scored.split(lengths)
    for row, kept in enumerate([3, 2, 1]):  # a text that is only its end-of-text keeps it
        assert out.student_ids[row, :kept].tolist() == texts[row][:kept]
        assert scored_per_row[row].nonzero().flatten().tolist() == list(range(kept - 1, lengths[row] - 1))


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
    killed_and_resumed(resumed, short(resumed, 6, *on_policy))
    whole, again = (
        load_file(tmp_path / "whole" / "export" / "model.safetensors"),
        load_file(resumed / "export" / "model.safetensors"),
    )
    for name in whole:
        torch.testing.assert_close(whole[name], again[name])


def test_a_student_that_diverged_stops_at_its_sample_as_a_nan_loss_does(tmp_path: Path, monkeypatch) -> None:
    """Weights gone NaN make the next sample fail in torch.multinomial: the run stops as for a NaN loss, naming the
    last good checkpoint and the command that continues, not with the sampler's traceback."""
    from transformers.generation.utils import GenerationMixin

    from recipe_runner.trainer.stops import TrainingDiverged

    original, calls = GenerationMixin.generate, {"n": 0}

    def diverged_after_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            with torch.no_grad():
                self.get_output_embeddings().weight.fill_(float("nan"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", diverged_after_three)
    on_policy = ["stages.0.on_policy={fraction: 1.0, max_new_tokens: 4}", "stages.0.losses=[{type: jsd}]"]
    with pytest.raises(TrainingDiverged) as caught:
        train(short(tmp_path / "run", 8, *on_policy))
    message = str(caught.value)
    assert message.startswith("the student's sampling probabilities became NaN or inf before step 4"), message
    assert f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'step-00000002'}" in message
    assert "--resume`" in message


def test_on_policy_mixes_with_the_teachers_written_answers(tmp_path: Path, capsys) -> None:
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
    assert "teacher answers (" not in capsys.readouterr().err  # a run without progress bars shows none of them
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [row for row in rows if "eval/terms/jsd" in row][-1]
    assert final["eval/terms/jsd"] > 0 and final["eval/terms/cross_entropy"] > 0
    assert (run_dir / "export" / "model.safetensors").is_file()


def test_across_two_vocabularies_both_models_read_the_students_sample_as_text(tmp_path: Path, monkeypatch) -> None:
    """The sample is decoded and read by each model through its own tokenizer; only aligned positions that
    predict a sampled token are compared, an unfinished sample reads no end-of-text, and no cross-entropy."""
    from components.data.pipeline import predicting_matches
    from components.models import pad_id
    from recipe_runner.loader import load_recipe
    from recipe_runner.trainer import on_policy
    from recipe_runner.trainer.objectives import CrossVocabObjective
    from recipe_runner.trainer.parts import build_parts

    recipe = load_recipe(REPO / "recipes" / "examples" / "qwen_cross_vocab_gkd_tiny.yaml", [f"output.dir={tmp_path}"])
    parts = build_parts(recipe.recipe, torch.device("cpu"))
    tokenizer, stage = parts.student_tokenizer, recipe.recipe.stages[1]
    eos, pad = tokenizer.eos_token_id, pad_id(tokenizer)
    words = tokenizer(" golden light", add_special_tokens=False)["input_ids"]
    budget = stage.on_policy.max_new_tokens
    # a sample going on without a space (as after a word, or punctuation) is read back without one inserted
    going_on = (tokenizer("ing", add_special_tokens=False)["input_ids"] + words * budget)[:budget]
    seen = {}

    def sampled(student, ids, prompt, spec, pad_, eos_):
        seen["prompts"] = [ids[row, :length].tolist() for row, length in enumerate(prompt.tolist())]
        new = torch.tensor([words + [eos] + [pad] * (budget - len(words) - 1), going_on])
        return new, torch.tensor([len(words) + 1, budget])

    monkeypatch.setattr(on_policy, "sampled_tokens", sampled)
    batch = parts.collate([parts.train[index] for index in range(2)])
    objective = CrossVocabObjective.for_stage(parts, stage)
    continuations, _ = objective.on_policy
    out = continuations(parts.model.student, batch)

    assert seen["prompts"] == [parts.train.prompt_ids(index, budget) for index in range(2)]
    lengths = out.student_mask.sum(1).tolist()
    for row, sample in enumerate((words + [eos], going_on)):
        start = int(out.answer_starts[row])
        assert out.student_ids[row, :start].tolist() == seen["prompts"][row]
        assert out.student_ids[row, start : lengths[row]].tolist() == sample  # its tokenizer writes it back
    assert not out.scored.any()  # no cross-entropy on the student's own output
    kept = predicting_matches(out)
    assert kept.any() and (out.alignment.matched_s[kept] >= out.answer_starts[out.alignment.matched_b[kept]]).all()
    teacher_text = parts.teacher_tokenizer.decode(out.teacher_ids[0], skip_special_tokens=True)
    assert teacher_text.endswith("golden light")
    prompt_text = tokenizer.decode(seen["prompts"][1], skip_special_tokens=True)
    assert parts.teacher_tokenizer.decode(out.teacher_ids[1], skip_special_tokens=True).startswith(prompt_text + "ing")
    sums, counts = objective.terms(parts.model, out)
    assert counts.tolist() == [float(kept.sum()), float(kept.sum())]  # uld and jsd, over the sample's pairs


def test_on_policy_across_two_vocabularies_trains_and_resumes_exactly(tmp_path: Path) -> None:
    recipe = REPO / "recipes" / "examples" / "qwen_cross_vocab_gkd_tiny.yaml"
    stage = ["stages=[{name: gkd, steps: 6, trainable: [student], lr: {student: 0.003}, losses: [{type: uld}, "
             "{type: jsd}], on_policy: {fraction: 0.5, max_new_tokens: 8}}]", "output.save_every_steps=3"]  # fmt: skip
    train([f"output.dir={tmp_path / 'whole'}", *stage], recipe=recipe)
    resumed = tmp_path / "resumed"
    train([f"output.dir={resumed}", *stage], recipe=recipe)
    killed_and_resumed(resumed, [f"output.dir={resumed}", *stage], recipe=recipe)
    whole, again = (
        load_file(tmp_path / "whole" / "export" / "model.safetensors"),
        load_file(resumed / "export" / "model.safetensors"),
    )
    for name in whole:
        torch.testing.assert_close(whole[name], again[name])
