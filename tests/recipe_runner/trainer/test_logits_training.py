"""The logits family trained for real on tiny models: the student moves towards the teacher, the export is a
transformers folder holding exactly the trained weights, a resumed run ends where an uninterrupted one does, and
teacher and student load by path as from a hub download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from logits_runs import RECIPE, REPO, TWIN, evals, killed_and_resumed, short, train
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import build_parts

pytestmark = pytest.mark.slow

TOKENIZER = REPO / "data" / "tokenizers" / "tiny_qwen"


def test_the_student_learns_the_teachers_next_token_distributions(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [f"output.dir={run_dir}", TWIN, "stages.0.losses=[{type: forward_kl}]", "stages.0.epochs=2"]
    summary = train(overrides)
    first, last = evals(run_dir)[0], evals(run_dir)[-1]
    assert last["eval/forward_kl"] < 0.85 * first["eval/forward_kl"]
    assert last["eval/top1_agreement"] > first["eval/top1_agreement"] + 0.02
    assert summary.export_dir == (run_dir / "export").resolve()


def test_the_export_is_a_transformers_folder_with_the_trained_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(short(run_dir, 4))
    export = run_dir / "export"
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert json.loads((export / "distilled.json").read_text())["recipe"] == "qwen_logits_tiny"
    trained = load_file(run_dir / "checkpoints" / "step-00000004" / "model.safetensors")
    for name, value in model.state_dict().items():
        if f"student.{name}" in trained:
            torch.testing.assert_close(value, trained[f"student.{name}"].to(value.dtype))
    ids = tokenizer("a red fox in snow", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape == (1, ids.shape[1], 2000)

    # `recipe export` from the last checkpoint writes the same weights again.
    again = tmp_path / "again"
    result = CliRunner().invoke(main, ["export", str(RECIPE), "--set", f"output.dir={run_dir}", "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert "exported causal LM" in result.output
    exported, rewritten = load_file(export / "model.safetensors"), load_file(again / "model.safetensors")
    assert exported.keys() == rewritten.keys()
    for name in exported:
        torch.testing.assert_close(exported[name], rewritten[name])

    result = CliRunner().invoke(
        main, ["infer", str(RECIPE), "--set", f"output.dir={run_dir}", "--prompt", "a fox", "--max-new-tokens", "4"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("prompt: a fox\nstudent: ")
    result = CliRunner().invoke(main, ["infer", "--checkpoint", str(export), "--prompt", "a fox"])
    assert result.exit_code == 2
    assert "holds a causal LM distilled by a logits recipe: give that RECIPE too" in result.output
    embedding = RECIPE.with_name("t5_to_qwen_tiny.yaml")  # a recipe given, of the other family
    result = CliRunner().invoke(main, ["infer", str(embedding), "--checkpoint", str(export), "--prompt", "a fox"])
    assert result.exit_code == 2 and "and this recipe distils an image encoder: give the logits recipe" in result.output
    encoder = tmp_path / "encoder_export"  # the other way round: an image encoder given to a logits recipe
    encoder.mkdir()
    (encoder / "encoder.json").write_text("{}")
    result = CliRunner().invoke(main, ["infer", str(RECIPE), "--checkpoint", str(encoder), "--prompt", "a fox"])
    assert result.exit_code == 1 and "holds a distilled image encoder (an embedding recipe's export)" in result.output
    best = run_dir / "checkpoints" / "best"
    result = CliRunner().invoke(main, ["infer", str(RECIPE), "--checkpoint", str(best), "--prompt", "a fox"])
    assert result.exit_code == 1
    assert f"{best} is a training checkpoint, not an export: write one with `recipe export {RECIPE} --checkpoint " in (
        result.output
    )
    unexported = ["infer", str(RECIPE), "--set", f"output.dir={tmp_path / 'never'}", "--prompt", "a fox"]
    result = CliRunner().invoke(main, unexported)
    assert result.exit_code == 1 and "train the recipe first with `recipe run " in result.output, result.output

    too_long = ["infer", str(RECIPE), "--set", f"output.dir={run_dir}", "--prompt", "a", "--max-new-tokens", "9999"]
    result = CliRunner().invoke(main, too_long)
    assert result.exit_code == 2 and "9999: the model reads at most 512 positions, prompt included" in result.output
    long_prompt = " ".join(["a red fox"] * 60)  # past student.max_length 128, and past the room 508 new tokens leave
    for new, said in (("4", "continues its first 128 (student.max_length 128): shorten"), ("508", "its first 4")):
        cut = ["infer", str(RECIPE), "--set", f"output.dir={run_dir}", "--prompt", long_prompt, "--max-new-tokens", new]
        result = CliRunner().invoke(main, cut)
        assert result.exit_code == 0 and "warning: prompt 1 is 180 tokens; the student " in result.stderr, result.output
        assert said in result.stderr
    # A damaged or hand-edited export is one line naming it, never a traceback or random weights.
    infer = ["infer", str(RECIPE), "--checkpoint", str(again), "--prompt", "a fox", "--max-new-tokens", "2"]
    config = json.loads((again / "config.json").read_text())
    (again / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))
    result = CliRunner().invoke(main, infer)
    assert result.exit_code == 1 and "its weights have other shapes than its config.json says" in result.output
    (again / "config.json").write_text(json.dumps(config))
    (again / "tokenizer.json").unlink()
    result = CliRunner().invoke(main, infer)
    assert result.exit_code == 1 and "re-export with `recipe export RECIPE`" in result.output
    assert "Traceback" not in result.output


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    train(short(tmp_path / "whole", 6))
    resumed = tmp_path / "resumed"
    train(short(resumed, 6))
    killed_and_resumed(resumed, short(resumed, 6))  # from step 4's checkpoint
    whole = load_file(tmp_path / "whole" / "export" / "model.safetensors")
    again = load_file(resumed / "export" / "model.safetensors")
    for name in whole:
        torch.testing.assert_close(whole[name], again[name])


def test_teacher_and_student_load_from_folders_saved_with_save_pretrained(tmp_path: Path) -> None:
    """The hub-id and local-path loading code, offline: tiny models saved the way a download lays them out."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    for name, width in (("teacher", 48), ("student", 32)):
        config = Qwen2Config(
            hidden_size=width,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=2 * width,
            vocab_size=2000,
        )
        torch.manual_seed(len(name))
        Qwen2ForCausalLM(config).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    recipe = tmp_path / "by_path.yaml"
    recipe.write_text(
        f"extends: {RECIPE}\n"
        "teacher: {config: null, tokenizer: null, model: ./teacher}\n"
        "student: {config: null, tokenizer: null, model: ./student}\n"
    )
    result = CliRunner().invoke(main, ["validate", str(recipe)])
    assert result.exit_code == 0, result.output
    summary = train(short(tmp_path / "run", 2), recipe=recipe)
    assert summary.global_step == 2
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()


def test_hidden_states_losses_train_a_projection_that_stays_out_of_the_export(tmp_path: Path) -> None:
    """Student width 32, teacher width 64: each mapped pair gets a 32 -> 64 projection, checkpointed with the
    student and trained with it; the export is the student alone."""
    run_dir = tmp_path / "run"
    feature = "stages.0.losses=[{type: hidden_states, layers: {1: 2, -1: -1}, distance: mse}]"
    train(short(run_dir, 24, feature, "output.eval_every_steps=24", "stages.0.lr.student=1e-2"))
    first, last = evals(run_dir)[0], evals(run_dir)[-1]
    assert last["eval/loss"] < 0.95 * first["eval/loss"]
    saved = load_file(run_dir / "checkpoints" / "step-00000024" / "model.safetensors")
    assert saved["projections.1_to_2.weight"].shape == (64, 32)
    assert "projections.-1_to_-1.weight" in saved
    earlier = load_file(run_dir / "checkpoints" / "step-00000016" / "model.safetensors")
    assert not torch.equal(earlier["projections.1_to_2.weight"], saved["projections.1_to_2.weight"])  # trained
    exported = load_file(run_dir / "export" / "model.safetensors")
    assert not any("projections" in name for name in exported)
    assert AutoModelForCausalLM.from_pretrained(run_dir / "export").config.hidden_size == 32


@pytest.mark.parametrize("loss", ["uld", "forward_kl"])
def test_a_student_with_another_tokenizer_learns_at_aligned_positions(tmp_path: Path, loss: str) -> None:
    """uld compares sorted probabilities; forward_kl the tokens both vocabularies share."""
    cross = RECIPE.with_name("qwen_cross_vocab_tiny.yaml")
    run_dir = tmp_path / "run"
    train(short(run_dir, 12, "output.eval_every_steps=12", f"stages.0.losses=[{{type: {loss}}}]"), recipe=cross)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    key = f"eval/terms/{loss}"
    first, last = [row for row in rows if key in row][0], [row for row in rows if key in row][-1]
    assert last[key] < 0.7 * first[key]
    model = AutoModelForCausalLM.from_pretrained(run_dir / "export")
    assert (
        AutoTokenizer.from_pretrained(run_dir / "export").get_vocab()
        == AutoTokenizer.from_pretrained(TOKENIZER).get_vocab()
    )  # the student's own tokenizer travels with it
    assert model.config.vocab_size == 2000


def test_a_cross_vocabulary_run_whose_aligner_pairs_nothing_stops_before_training(tmp_path: Path, monkeypatch) -> None:
    """uld with no aligned pair would log zero, as if the student matched the teacher perfectly."""
    from components.alignment import CrossTokenizerAligner, SampleAlignment

    monkeypatch.setattr(CrossTokenizerAligner, "align", lambda self, text, student, teacher: SampleAlignment())
    cross = RECIPE.with_name("qwen_cross_vocab_tiny.yaml")
    result = CliRunner().invoke(main, ["run", str(cross), "--set", f"output.dir={tmp_path / 'run'}"])
    assert result.exit_code == 1, result.output  # a setup error: the recipe itself is valid
    assert "the aligner paired no token of the student's with one of the teacher's in the first 64" in result.output
    assert f"`recipe align-report {cross} --set output.dir={tmp_path / 'run'}`" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_held_out_texts_with_no_aligned_pair_report_no_pair_term_rather_than_a_perfect_zero(
    tmp_path: Path, monkeypatch
) -> None:
    from components.alignment import CrossTokenizerAligner, SampleAlignment

    held_out = set((REPO / "data" / "prompts" / "eval.txt").read_text().splitlines())
    align = CrossTokenizerAligner.align

    def none_held_out(self, text, student, teacher):
        return SampleAlignment() if text in held_out else align(self, text, student, teacher)

    monkeypatch.setattr(CrossTokenizerAligner, "align", none_held_out)
    run_dir = tmp_path / "run"
    losses = "stages.0.losses=[{type: uld}, {type: cross_entropy}]"
    train(short(run_dir, 2, "output.eval_every_steps=2", losses), recipe=RECIPE.with_name("qwen_cross_vocab_tiny.yaml"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [row for row in rows if "eval/loss" in row]
    assert evaluated and all("eval/terms/cross_entropy" in row and "eval/terms/uld" not in row for row in evaluated)


def test_sequence_level_distillation_trains_on_answers_written_once_without_the_teacher(tmp_path: Path) -> None:
    """The teacher (another tokenizer) answers every prompt once; `recipe run` reads those answers back and
    trains cross-entropy on them without loading the teacher."""
    recipe = RECIPE.with_name("qwen_sequence_kd_tiny.yaml")
    answers, run_dir = tmp_path / "answers", tmp_path / "run"
    overrides = [f"teacher.answers.dir={answers}", f"output.dir={run_dir}"]
    args = ["cache", str(recipe)] + [item for override in overrides for item in ("--set", override)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "train: 200 teacher answers" in result.output
    written = (answers / "train.jsonl").stat().st_mtime_ns
    loaded = load_recipe(recipe, overrides).recipe
    parts = build_parts(loaded, torch.device("cpu"))
    assert parts.teacher is None  # only cross-entropy reads the answers
    assert parts.train.answers[0] == json.loads((answers / "train.jsonl").read_text().splitlines()[0])["answer"]
    del parts
    train(overrides + ["stages.0.epochs=null", "stages.0.steps=30", "output.eval_every_steps=30"], recipe=recipe)
    assert (answers / "train.jsonl").stat().st_mtime_ns == written  # read back, not written again
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [row["eval/cross_entropy"] for row in rows if "eval/cross_entropy" in row]
    assert "eval/forward_kl" not in rows[0]  # no teacher in training: nothing to compare logits with
    assert losses[-1] < 0.92 * losses[0]


def test_answers_across_two_vocabularies_compare_the_answers_aligned_tokens_only(tmp_path: Path) -> None:
    """ULD on the teacher's written answers (as in Boizard et al.): both models read prompt + answer through
    their own tokenizers; pairs and cross-entropy count only positions that predict the answer."""
    from recipe_runner.trainer.objectives import CrossVocabObjective

    recipe = RECIPE.with_name("qwen_cross_vocab_answers_tiny.yaml")
    run_dir = tmp_path / "run"
    overrides = [
        f"teacher.answers.dir={tmp_path / 'answers'}",
        f"output.dir={run_dir}",
        "stages.0.epochs=null",
        "stages.0.steps=30",
        "output.eval_every_steps=30",
    ]
    train(overrides, recipe=recipe)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    uld = [row["eval/terms/uld"] for row in rows if "eval/terms/uld" in row]
    assert uld[-1] < 0.7 * uld[0]

    loaded = load_recipe(recipe, overrides).recipe
    parts = build_parts(loaded, torch.device("cpu"))
    batch = parts.collate([parts.train[i] for i in range(8)])
    objective = CrossVocabObjective.for_stage(parts, loaded.stages[0])
    _, counts = objective.terms(parts.model, batch)
    a = batch.alignment
    answered = (a.matched_s >= batch.answer_starts[a.matched_b]) & (a.matched_s > 0) & (a.matched_t > 0)
    assert 0 < int(answered.sum()) < len(a.matched_s)
    assert counts.tolist() == [float(answered.sum()), float(batch.scored.sum())]


def test_attention_maps_of_mapped_layers_move_towards_the_teachers(tmp_path: Path) -> None:
    """A teacher of the student's shape with moderately peaked attention (init 0.1): its maps can be learnt."""
    run_dir = tmp_path / "run"
    teacher = TWIN.replace("initializer_range: 0.2", "initializer_range: 0.1")
    attention = "stages.0.losses=[{type: attention, layers: {-1: -1, 0: 0}}]"
    extra = ("hardware.attention=eager", "stages.0.lr.student=1e-2", "output.eval_every_steps=30")
    train(short(run_dir, 30, teacher, attention, *extra))
    losses = [row["eval/loss"] for row in evals(run_dir)]
    assert losses[-1] < 0.8 * losses[0]


def test_a_resume_that_adds_projections_names_the_loss_change_not_damage(tmp_path: Path) -> None:
    from recipe_runner.trainer.resume import ResumeMismatchError

    run_dir = tmp_path / "run"
    train(short(run_dir, 4))
    shutil.rmtree(run_dir / "checkpoints" / "step-00000004")
    with_projection = "stages.0.losses=[{type: forward_kl}, {type: hidden_states, layers: {1: 2}}]"
    with pytest.raises(ResumeMismatchError, match=r"another architecture .* stages\.0\.losses\.1\.layers\.1"):
        train(short(run_dir, 4, with_projection), resume=True)


def test_packed_student_and_teacher_give_the_padded_rows(tmp_path: Path) -> None:
    """Packed (the block-diagonal mask a CPU checks with; flash varlen on CUDA) and padded forwards give the same
    logits and hidden states of the real tokens, in the same order; a packed run trains."""
    from recipe_runner.trainer.logit_parts import teacher_logits
    from recipe_runner.trainer.packing import choose_packing

    packed = ["hardware.packed_sequences=true", f"output.dir={tmp_path / 'run'}"]
    recipe = load_recipe(RECIPE, packed).recipe
    parts = build_parts(recipe, torch.device("cpu"))
    batch = parts.collate([parts.train[index] for index in range(6)])
    model, keys = parts.model.eval(), (("hidden", 1, 2),)
    padded = (
        model(batch.student_ids, batch.student_mask, keys),
        teacher_logits(parts.teacher, batch.student_ids, batch.student_mask, (("hidden", 2),)),
    )
    assert "packed sequences" in choose_packing(model, recipe, torch.device("cpu"), parts.teacher)
    rows = (
        model(batch.student_ids, batch.student_mask, keys, batch.student_packing),
        teacher_logits(parts.teacher, batch.student_ids, batch.student_mask, (("hidden", 2),), batch.student_packing),
    )
    torch.testing.assert_close(rows[0][0], padded[0][0], atol=1e-4, rtol=1e-4)  # student logits
    torch.testing.assert_close(rows[0][1][0], padded[0][1][0], atol=1e-4, rtol=1e-4)  # its hidden state 1
    torch.testing.assert_close(rows[1][0], padded[1][0], atol=1e-4, rtol=1e-4)  # teacher logits
    torch.testing.assert_close(rows[1][1][("hidden", 2)], padded[1][1][("hidden", 2)], atol=1e-4, rtol=1e-4)
    del parts
    assert train(short(tmp_path / "run", 2, *packed)).global_step == 2


def test_across_two_vocabularies_the_packed_teacher_gives_the_padded_terms(tmp_path: Path) -> None:
    """The teacher reads its own tokens, packed by the collator's layout (no device sync to build it)."""
    from dataclasses import replace

    from recipe_runner.trainer.objectives import CrossVocabObjective
    from recipe_runner.trainer.packing import choose_packing

    cross = RECIPE.with_name("qwen_cross_vocab_tiny.yaml")
    recipe = load_recipe(cross, ["hardware.packed_sequences=true", f"output.dir={tmp_path}"]).recipe
    parts = build_parts(recipe, torch.device("cpu"))
    batch = parts.collate([parts.train[index] for index in range(6)])
    assert batch.teacher_packing is not None
    objective = CrossVocabObjective.for_stage(parts, recipe.stages[0])
    model = parts.model.eval()
    with torch.no_grad():
        padded = objective.terms(model, replace(batch, student_packing=None, teacher_packing=None))
        assert "packed sequences" in choose_packing(model, recipe, torch.device("cpu"), parts.teacher)
        packed = objective.terms(model, batch)
    torch.testing.assert_close(packed[0], padded[0], atol=1e-4, rtol=1e-4)
    assert torch.equal(packed[1], padded[1])


def test_projections_train_only_in_the_stages_whose_losses_read_them() -> None:
    """A trainable parameter no loss reads would stop a DDP run (it waits for a gradient that never comes)."""
    from recipe_runner.trainer.logit_parts import build_logits_model
    from recipe_runner.trainer.stage_setup import enter_stage

    stages = (
        "stages=[{name: features, steps: 2, trainable: [student], lr: {student: 0.001}, losses: [{type: forward_kl},"
        " {type: hidden_states, layers: {1: 2}}]}, {name: logits, steps: 2, trainable: [student], lr: {student: 0.001},"
        " losses: [{type: forward_kl}]}]"
    )
    recipe = load_recipe(RECIPE, [stages]).recipe
    model = build_logits_model(recipe, "cpu")
    enter_stage(model, recipe.stages[0], "fp32")
    assert all(p.requires_grad for p in model.projections.parameters())
    enter_stage(model, recipe.stages[1], "fp32")
    assert not any(p.requires_grad for p in model.projections.parameters())
    assert all(p.requires_grad for p in model.student.parameters())


def test_a_finished_run_resumes_to_its_own_export_and_gpt2_models_plan_and_train(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["run", str(RECIPE), "--set", f"output.dir={run_dir}", "--set", "stages.0.epochs=null"]
    args += ["--set", "stages.0.steps=2", "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, [*args, "--resume"])  # re-exports into the causal-LM export it wrote
    assert result.exit_code == 0, result.output
    assert "exported causal LM" in result.output

    gpt2 = [
        "teacher.config={model_type: gpt2, n_embd: 64, n_layer: 2, n_head: 4, vocab_size: 2000}",
        "student.config={model_type: gpt2, n_embd: 32, n_layer: 2, n_head: 4, vocab_size: 2000}",
    ]
    plan = CliRunner().invoke(main, ["plan", str(RECIPE), *(x for o in gpt2 for x in ("--set", o))])
    assert plan.exit_code == 2  # gpt2's own end-of-text id, 50256, is no token of a 2000-token vocabulary
    assert "teacher.config.eos_token_id: 50256 is outside vocab_size 2000" in plan.stderr
    ids = ", bos_token_id: 1935, eos_token_id: 1935}"  # the shipped tokenizer's <|endoftext|>
    gpt2 = [setting.replace("}", ids) for setting in gpt2]
    plan = CliRunner().invoke(main, ["plan", str(RECIPE), *(x for o in gpt2 for x in ("--set", o))])
    assert plan.exit_code == 0, plan.output
    assert train(short(tmp_path / "gpt2", 2, *gpt2)).global_step == 2


def test_the_features_example_brings_each_mapped_term_closer_at_a_dynamic_temperature(tmp_path: Path) -> None:
    """Hidden states through a projection, attention maps and forward KL whose student temperature follows the
    spread of its logits: each term is reported on held-out texts as trained, and the distillation terms drop."""
    features = RECIPE.with_name("qwen_features_tiny.yaml")
    run_dir = tmp_path / "run"
    train(short(run_dir, 30, "output.eval_every_steps=30"), recipe=features)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    held_out = [row for row in rows if "eval/terms/forward_kl" in row]
    first, last = held_out[0], held_out[-1]
    assert (first["step"], last["step"]) == (0, 30)
    assert {"eval/terms/hidden_states", "eval/terms/attention", "eval/terms/cross_entropy"} <= set(last)
    assert last["eval/terms/forward_kl"] < 0.8 * first["eval/terms/forward_kl"]
    assert last["eval/terms/hidden_states"] < 0.9 * first["eval/terms/hidden_states"]
