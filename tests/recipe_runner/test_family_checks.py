"""A section, student or loss of the other family, and two tokenizers for one vocabulary, are named by validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe_runner.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "examples"
LOGITS = RECIPES / "qwen_logits_tiny.yaml"
EMBEDDING = RECIPES / "t5_to_qwen_tiny.yaml"


def _validate(recipe: Path, *overrides: str) -> str:
    args = ["validate", str(recipe)]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return result.output


def test_sections_of_the_embedding_family_in_a_logits_recipe_are_named_with_what_to_do() -> None:
    out = _validate(
        LOGITS,
        "bolt_on={layers: [{type: linear, out_dim: 64}]}",
        "inference={pipeline: lodestones/Chroma1-HD}",
        "stages.0.losses.1={type: huber, on: matched}",
    )
    assert "bolt_on: not used by the logits family" in out
    assert "inference: not used by the logits family" in out
    assert "stages[0].losses[1].type: 'huber' is not a loss of the logits family; use one of forward_kl" in out


def test_a_student_of_the_other_family_is_named_on_either_side() -> None:
    assert "student.type: a causal_lm teacher is distilled through its next-token logits" in _validate(
        LOGITS, "student.type=hidden_states"
    )
    out = _validate(EMBEDDING, "student.type=causal_lm", "stages.0.losses.0={type: forward_kl}")
    assert "student.type: a t5_encoder teacher is distilled through hidden states" in out
    assert "stages[0].losses[0].type: 'forward_kl' is not a loss of the embedding family; use one of huber" in out


def test_an_embedding_recipe_without_alignment_is_told_to_add_one() -> None:
    assert "alignment: the embedding family pairs student and teacher tokens" in _validate(EMBEDDING, "alignment=null")


def test_teacher_and_student_with_different_tokenizers_are_told_about_alignment_and_uld() -> None:
    tiny_t5 = str(RECIPES.parents[1] / "data" / "tokenizers" / "tiny_t5")
    out = _validate(LOGITS, f"teacher.tokenizer={tiny_t5}")
    assert "teacher.tokenizer: the teacher's tokenizer" in out
    assert "add `alignment: {type: cross_tokenizer}` and compare them with uld, or with forward_kl" in out


def test_losses_that_need_one_vocabulary_are_refused_across_two_and_uld_needs_alignment() -> None:
    cross = RECIPES / "qwen_cross_vocab_tiny.yaml"
    out = _validate(cross, "stages.0.losses=[{type: hidden_states, layers: {1: 1}}]")
    assert "stages[0].losses[0].type: hidden_states compares the models token by token" in out
    assert "stages[0].losses: with `alignment` the teacher teaches through uld, or forward_kl" in out
    assert "alignment.tiers: across two vocabularies the logits are compared at the positions before matched" in (
        _validate(cross, "alignment.tiers=[split]")
    )
    mapped = ["validate", str(cross), "--set", "stages.0.losses=[{type: forward_kl}, {type: jsd}]"]
    assert CliRunner().invoke(main, mapped).exit_code == 0
    out = _validate(LOGITS, "stages.0.losses=[{type: uld}]")
    assert "stages[0].losses[0].type: uld compares two vocabularies at aligned positions" in out


def test_on_policy_across_two_vocabularies_leaves_room_for_the_prompt_on_the_teachers_side() -> None:
    cross = RECIPES / "qwen_cross_vocab_gkd_tiny.yaml"
    out = _validate(cross, "teacher.max_length=16", "stages.1.on_policy.max_new_tokens=16")
    assert "stages[1].on_policy.max_new_tokens: 16 leaves no room for the prompt in teacher.max_length 16" in out
    fits = ["validate", str(cross), "--set", "teacher.max_length=17", "--set", "stages.1.on_policy.max_new_tokens=16"]
    assert CliRunner().invoke(main, fits).exit_code == 0


def test_a_teacher_shorter_than_the_student_cannot_read_its_tokens() -> None:
    assert "teacher.max_length: the teacher reads the student's tokens" in _validate(LOGITS, "teacher.max_length=64")


@pytest.mark.parametrize(
    ("command", "words"),
    [("cache", "`recipe cache` is for the embedding family"), ("align-report", "has no alignment: teacher and")],
)
def test_commands_that_need_a_cache_or_an_alignment_say_so_for_a_logits_recipe(command: str, words: str) -> None:
    result = CliRunner().invoke(main, [command, str(LOGITS)])
    assert result.exit_code != 0
    assert words in result.output


def test_align_report_shows_the_matched_tokens_and_shared_ids_compared_across_two_vocabularies() -> None:
    result = CliRunner().invoke(main, ["align-report", str(RECIPES / "qwen_cross_vocab_tiny.yaml")])
    assert result.exit_code == 0, result.output
    assert "matched" in result.output
    assert "vocabularies: 678 tokens shared: 93.8% of the teacher's 723, 35.0% of the student's 1936" in result.output


def test_align_report_of_a_recipe_trained_on_answers_measures_prompts_with_their_answers(tmp_path) -> None:
    """Its uld loss compares the answers' tokens: until they are written the report says it measures less."""
    recipe = str(RECIPES / "qwen_cross_vocab_answers_tiny.yaml")
    train = RECIPES.parents[1] / "data" / "prompts" / "train.txt"
    values = [f"teacher.answers.dir={tmp_path / 'answers'}", "teacher.answers.max_new_tokens=8",
              f"data.train={{path: {train}, limit: 16}}", "data.eval=null"]  # fmt: skip
    sets = [arg for value in values for arg in ("--set", value)]
    alone = CliRunner().invoke(main, ["align-report", recipe, *sets])
    assert alone.exit_code == 0, alone.output
    assert "note: the teacher's answers for train are not written yet (`recipe cache " in alone.stderr
    assert "train split of qwen_cross_vocab_answers_tiny (prompts alone)" in alone.stdout
    assert CliRunner().invoke(main, ["cache", recipe, *sets, "--no-progress"]).exit_code == 0
    joined = CliRunner().invoke(main, ["align-report", recipe, *sets])
    assert "(prompts with the teacher's answers)" in joined.stdout and "note:" not in joined.stderr

    def tokens(report: str) -> int:
        return int(report.split("student real tokens: ")[1].split()[0])

    assert tokens(joined.stdout) > tokens(alone.stdout)


def test_tokenizers_sharing_no_token_leave_the_mapped_divergences_nothing(monkeypatch) -> None:
    from components.losses import vocab_map

    monkeypatch.setattr(vocab_map, "token_texts", lambda tokenizer: {f"{len(tokenizer)}-only": 0})
    out = _validate(RECIPES / "qwen_cross_vocab_tiny.yaml", "stages.0.losses=[{type: uld}, {type: reverse_kl}]")
    assert "stages[0].losses[1].type: reverse_kl across two vocabularies compares the tokens both share, and" in out
    assert "losses[0]" not in out


def test_on_policy_needs_room_for_its_samples_a_divergence_to_apply_and_a_logits_recipe() -> None:
    out = _validate(
        LOGITS,
        "stages.0.on_policy={max_new_tokens: 128}",
        "stages.0.losses=[{type: cross_entropy}]",
    )
    assert "stages[0].on_policy.max_new_tokens: 128 leaves no room for the text in student.max_length 128" in out
    assert "stages[0].on_policy: the stage has only cross_entropy, which is not applied to the student's samples" in out
    assert "stages[0].on_policy: logits family only" in _validate(EMBEDDING, "stages.0.on_policy={fraction: 1.0}")


def test_a_hidden_states_layer_map_names_layers_both_models_have() -> None:
    out = _validate(LOGITS, "stages.0.losses=[{type: hidden_states, layers: {1: 2, 3: -5}}]")
    assert "stages[0].losses[0].layers: student hidden state 3 does not exist: the student has 2 layers" in out
    assert "teacher hidden state -5 does not exist: the teacher has 3 layers, so its hidden states are -4..3" in out
    out = _validate(LOGITS, "stages.0.losses=[{type: hidden_states, layers: {2: 3, -1: -1, 0: 1, -3: -3}}]")
    assert "stages[0].losses[0].layers: -1: -1 is the same pair of layers as 2: 3" in out
    assert "-3: -3 is the same pair of layers as 0: 1" in out
    out = _validate(LOGITS, "stages.0.losses=[{type: hidden_states, layers: {2: 3, -1: 2, 5: 3, 7: 3}}]")
    assert "same pair" not in out and "student hidden state 7 does not exist" in out  # another teacher layer


def test_a_teacher_that_only_writes_answers_may_have_another_tokenizer_but_not_when_kl_reads_it() -> None:
    sequence = RECIPES / "qwen_sequence_kd_tiny.yaml"
    result = CliRunner().invoke(main, ["validate", str(sequence)])
    assert result.exit_code == 0, result.output
    out = _validate(sequence, "stages.0.losses=[{type: cross_entropy}, {type: forward_kl}]")
    assert "teacher.tokenizer: the teacher's tokenizer" in out


def test_attention_maps_need_eager_attention_and_layers_both_models_have() -> None:
    out = _validate(LOGITS, "stages.0.losses=[{type: attention, layers: {2: 3, -1: -1}}]")
    assert "hardware.attention: stages[0].losses[0] matches attention maps, which only eager attention returns" in out
    assert "student attention map 2 does not exist: the student has 2 layers, so its attention maps are -2..1" in out
    assert "teacher attention map 3 does not exist" in out


def test_packing_a_logits_recipe_is_refused_where_sampling_or_attention_maps_need_the_models_own_attention() -> None:
    gkd = RECIPES / "qwen_gkd_tiny.yaml"
    assert "on_policy samples through the student's own attention" in _validate(gkd, "hardware.packed_sequences=true")
    attention = "stages.0.losses=[{type: attention, layers: {0: 0}}]"
    out = _validate(LOGITS, attention, "hardware.attention=eager", "hardware.packed_sequences=true")
    assert "hardware.packed_sequences: is true, but an attention loss reads attention maps" in out


def test_a_bidirectional_student_trains_by_denoising_only_and_its_mask_is_one_token() -> None:
    denoising = RECIPES / "qwen3_denoising_tiny.yaml"
    assert "stages[0]: student.bidirectional sees each token it would predict" in _validate(
        denoising, "stages.0.denoising=null"
    )
    assert "stages[0].denoising: denoising trains an encoder: set student.bidirectional: true" in _validate(
        denoising, "student.bidirectional=false"
    )
    out = _validate(denoising, "stages.0.denoising.mask_token=a red fox")
    assert "stages[0].denoising.mask_token: mask_token 'a red fox' is 3 tokens of the student's tokenizer" in out
    out = _validate(denoising, "stages.0.losses=[{type: cross_entropy}, {type: attention, layers: {-1: -1}}]")
    assert "stages[0].losses[1]: an attention loss compares the bidirectional student's maps with the causal" in out
    out = _validate(denoising, "stages.0.on_policy={fraction: 1.0}")
    assert "stages[0].on_policy: denoising trains a bidirectional student, which sees the whole text at once" in out
    assert "stages[0].denoising: logits family only" in _validate(EMBEDDING, "stages.0.denoising={}")


def test_answers_go_to_a_folder_of_their_own(tmp_path: Path) -> None:
    sequence = RECIPES / "qwen_sequence_kd_tiny.yaml"
    (tmp_path / "notes.txt").write_text("mine")
    out = _validate(sequence, f"teacher.answers.dir={tmp_path}")
    assert f"teacher.answers.dir: {tmp_path} already holds files that recipe did not write (notes.txt)" in out
    shared = tmp_path / "shared"
    out = _validate(sequence, f"teacher.answers.dir={shared}", f"output.dir={shared}")
    assert "teacher.answers.dir: the answers must not be in the output directory" in out


def test_answers_leave_room_for_their_prompt() -> None:
    out = _validate(RECIPES / "qwen_sequence_kd_tiny.yaml", "teacher.answers.max_new_tokens=500")
    assert "teacher.answers.max_new_tokens: 500 leaves no room for the prompt in student.max_length 128" in out


def test_a_tier_loss_in_a_causal_lm_recipe_is_told_the_loss_is_the_mistake_not_its_missing_tier() -> None:
    out = _validate(LOGITS, "stages.0.losses=[{type: huber}]")
    assert "stages[0].losses[0].on: required field is missing (an alignment tier: this loss compares aligned" in out
    assert "a causal_lm teacher takes forward_kl" in out
    out = _validate(EMBEDDING, "stages.0.losses=[{type: huber}]")
    assert "stages[0].losses[0].on: required field is missing\n" in out  # the embedding family needs only the tier
