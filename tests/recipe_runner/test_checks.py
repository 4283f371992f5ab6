"""Semantic checks at their edges: what passes, what fails, and that validate catches what a run would crash on
(recipe_runner.checks; the golden messages are in test_errors_golden.py); a broken teacher source is reported
once, with no cache noise."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from components.cache.manifest import teacher_identity
from components.cache.writer import prepare_split
from components.data import prompts as prompts_module
from components.data.prompts import prompts_digest
from recipe_runner.cli import main
from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import split_prompts

BASE = Path(__file__).resolve().parents[1] / "assets" / "broken" / "base.yaml"
TINY = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def _problems(*overrides: str) -> list[str]:
    try:
        load_recipe(BASE, overrides)
    except RecipeError as exc:
        return [f"{problem.field}: {problem.message}" for problem in exc.problems]
    return []


@pytest.mark.parametrize("layer", [-3, -1, 0, 2])
def test_every_hidden_state_of_the_student_is_a_valid_layer(layer: int) -> None:
    assert _problems(f"student.layer={layer}") == []


@pytest.mark.parametrize("layer", [-4, 3, 99, -99])
def test_a_layer_past_the_student_is_a_problem(layer: int) -> None:
    [problem] = _problems(f"student.layer={layer}")
    assert problem.startswith(f"student.layer: layer {layer} does not exist: the student has 2 layers")


def test_an_embedding_as_large_as_the_tokenizer_is_enough() -> None:
    assert _problems("student.config.vocab_size=1936") == []
    assert _problems("student.config.vocab_size=1935")[0].startswith("student.config.vocab_size: the student embed")


def test_the_teacher_embedding_must_cover_its_tokenizer_too() -> None:
    [problem] = _problems("teacher.config.vocab_size=700")
    assert problem.startswith("teacher.config.vocab_size: the teacher embedding has 700 rows but its tokenizer has 723")


def test_a_tokenizer_that_cannot_be_read_offline_skips_the_vocabulary_check(tmp_path, monkeypatch) -> None:
    """validate needs no download: an uncached tokenizer is reported by the verbs that load it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert _problems("student.config.vocab_size=10", "student.tokenizer=someorg/uncached") == []


def test_a_non_t5_teacher_fails_validate_and_plan_not_the_build(tmp_path: Path) -> None:
    sets = ["--set", "teacher.config.model_type=bert", "--set", f"teacher.cache.dir={tmp_path / 'c'}"]
    for verb in ("validate", "plan"):
        result = CliRunner().invoke(main, [verb, str(BASE), *sets])
        assert result.exit_code == 2, result.output
        assert "teacher.config.model_type: a t5_encoder teacher needs a T5 architecture" in result.stderr
        assert "Traceback" not in result.output
    # the unusable teacher is not measured: no width problem follows from its BERT config
    assert len(_problems("teacher.config.model_type=bert")) == 1


def test_a_data_folder_is_a_problem_at_the_field(tmp_path: Path) -> None:
    folder = tmp_path / "prompts.txt"
    folder.mkdir()
    assert _problems(f"data.train={folder}") == [
        f"data.train: {folder} is a directory, not a data file: name a .txt or .jsonl file in it"
    ]


def test_an_unreadable_data_file_is_a_problem_at_the_field(tmp_path: Path, monkeypatch) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_text("a fox\n")
    monkeypatch.setattr(prompts_module.os, "access", lambda path, mode: path != locked)
    assert _problems(f"data.eval={locked}") == [f"data.eval: cannot read data file {locked}: permission denied"]


def _tiny_problems(tmp_path: Path, *overrides: str) -> list[str]:
    sets = [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}", *overrides]
    with pytest.raises(RecipeError) as caught:
        load_recipe(TINY, sets)
    return [str(problem) for problem in caught.value.problems]


@pytest.fixture
def cache_of_the_tiny_teacher(tmp_path: Path) -> None:
    """A manifest per split, as `recipe cache` leaves it (no shards needed for the comparison)."""
    recipe = load_recipe(TINY, [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}"]).recipe
    for split, prompts in zip(("train", "eval"), split_prompts(recipe), strict=True):
        prepare_split(tmp_path / "cache" / split, teacher_identity(recipe), prompts_digest(prompts), len(prompts), 4)


def test_a_cache_of_other_prompts_fails_validate_at_the_cache(tmp_path, cache_of_the_tiny_teacher):
    prompts = Path(__file__).resolve().parents[2] / "data" / "prompts" / "train.txt"
    [problem] = _tiny_problems(tmp_path, f"data.train={{path: {prompts}, limit: 3}}")
    assert f"teacher.cache.dir: the cache {tmp_path / 'cache' / 'train'} was made from other prompts than " in problem
    assert "(600 cached, 3 now): delete that folder and rerun `recipe cache`" in problem


def test_a_missing_teacher_path_is_the_one_problem(tmp_path, cache_of_the_tiny_teacher):
    problems = _tiny_problems(tmp_path, "teacher.config=null", "teacher.model=/nope")
    assert len(problems) == 1, problems
    assert "teacher.model: local path '/nope' does not exist" in problems[0]


def test_another_teacher_is_one_problem_for_both_splits_without_none(tmp_path, cache_of_the_tiny_teacher):
    problems = _tiny_problems(tmp_path, "teacher.config.d_ff=256")
    assert len(problems) == 1, problems
    assert "(eval and train)" in problems[0] and "inline config differs" in problems[0]
    assert "None" not in problems[0]


def test_packed_sequences_true_with_attention_dropout_fails_validate_at_the_field() -> None:
    [problem] = _problems("hardware.packed_sequences=true", "bolt_on.layers.1.dropout=0.1")
    assert problem.startswith("hardware.packed_sequences: is true, but bolt_on.layers[1]")
    assert "attention dropout (0.1)" in problem and "set it to auto or false" in problem
    assert _problems("bolt_on.layers.1.dropout=0.1") == []  # auto pads instead


def test_packed_sequences_true_for_cuda_checks_the_flash_kernel_even_on_a_cpu_machine() -> None:
    """The base student's heads are 12 wide: the CPU reference packs them, the flash kernel cannot."""
    assert _problems("hardware.packed_sequences=true") == []
    [problem] = _problems("hardware.packed_sequences=true", "hardware.device=cuda", "hardware.precision=bf16")
    assert problem.startswith("hardware.packed_sequences: ") and "the student has head width 12" in problem
    sets = ("hardware.packed_sequences=true", "hardware.device=cuda", "student.config.head_dim=16")
    [problem] = _problems(*sets)
    assert "needs precision bf16 or fp16" in problem


def test_cut_off_student_weights_fail_validate_at_the_field_not_the_run(tmp_path: Path) -> None:
    from components.models import build_model

    recipe = load_recipe(BASE).recipe
    folder = tmp_path / "student"
    build_model(recipe.student, "student").save_pretrained(folder)
    assert _problems("student.config=null", f"student.model={folder}") == []
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    [problem] = _problems("student.config=null", f"student.model={folder}")
    assert problem.startswith(f"student.model: {weights}: it is cut short")


def test_an_empty_data_file_or_a_jsonl_without_the_field_fails_validate_at_the_field(tmp_path: Path) -> None:
    blank, records = tmp_path / "blank.txt", tmp_path / "eval.jsonl"
    blank.write_text("\n\n")
    records.write_text('{"prompt": "a fox"}\n')
    problems = _problems(f"data.train={blank}", f"data.eval={{path: {records}}}")
    assert problems == [
        f"data.train: {blank}: no prompts in file (one per line, blank lines are skipped)",
        f"data.eval: {records}:1: record has no string field 'text' (its keys: 'prompt'); set this data file's "
        "`field:` to the key that holds the prompt",
    ]


def test_a_smoke_run_shorter_than_its_warmup_passes_validate() -> None:
    """Cutting steps for a quick try must not be refused; plan and run warn instead."""
    assert _problems("stages.0.epochs=null", "stages.0.steps=3", "stages.0.warmup_steps=50") == []


def test_an_output_or_cache_folder_that_holds_someone_elses_files_fails_validate(tmp_path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    (home / "Documents").mkdir(parents=True)
    (home / "versions.json").write_text('{"my": "settings"}')  # a name a run writes: replacing it would lose it
    (home / "metrics.jsonl").write_text("epoch,loss\n1,0.5\n")
    (project / "train").mkdir(parents=True)
    (project / "train" / "notes.txt").write_text("mine")
    output, cache = _problems(f"output.dir={home}", f"teacher.cache.dir={project}")
    assert output == (
        f"output.dir: {home} already holds files that recipe did not write (Documents, metrics.jsonl (not a run's, "
        "by what it holds), versions.json (not a run's, by what it holds)); a run's checkpoints, logs and export "
        "would go beside them and replace any of the same names: choose a new or empty folder (e.g. runs/NAME)"
    )
    run = tmp_path / "run"  # what a run killed before it took its lock leaves: its own, taken again
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "eval/loss": 1.2}\n{"step": 5, "lo')
    (run / "versions.json").write_text('{"torch": "2.13.0"}')
    (run / "resolved_recipe.yaml").write_text("recipe: t5_to_qwen_tiny\n")
    assert _problems(f"output.dir={run}") == []
    assert cache.startswith(f"teacher.cache.dir: {project} already holds files that recipe did not write "
                            "(train/notes.txt); the teacher cache's shards would go")  # fmt: skip


def test_an_export_or_a_device_as_output_dir_is_named_as_what_it_is(tmp_path) -> None:
    export = tmp_path / "export"
    (export / "student").mkdir(parents=True)
    (export / "encoder.json").write_text("{}")
    assert _problems(f"output.dir={export}") == [
        f"output.dir: {export} is an export (it holds encoder.json), not a run folder: give the run a folder of its "
        "own; its export is written inside it, at export/"
    ]
    assert _problems("output.dir=/dev/null") == [
        "output.dir: /dev/null is a device or pipe, not a directory: choose another path"
    ]


def test_the_home_folder_is_never_a_run_or_cache_folder_even_with_only_dotfiles_in_it(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    (home / ".bashrc").parent.mkdir()
    (home / ".bashrc").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    [output] = _problems('output.dir="~"')
    [cache] = _problems('teacher.cache.dir="~/"')
    assert output == (
        f"output.dir: {home} is your home folder: give a run's checkpoints, logs and export a folder of its own "
        "(e.g. ~/runs/NAME)"
    )
    assert cache.startswith(f"teacher.cache.dir: {home} is your home folder")


def test_an_output_folder_that_cannot_be_written_fails_validate_and_a_read_only_cache_does_not(
    tmp_path, monkeypatch
) -> None:
    import recipe_runner.file_checks as file_checks

    locked = tmp_path / "ro"
    locked.mkdir()
    real = file_checks.os.access
    monkeypatch.setattr(file_checks.os, "access", lambda path, mode: Path(path) != locked and real(path, mode))
    assert _problems(f"output.dir={locked / 'run'}") == [
        f"output.dir: {locked} is not writable by you: choose another output.dir for the run"
    ]
    assert _problems(f"teacher.cache.dir={locked / 'cache'}") == []  # a team's read-only cache is read


def test_a_run_folder_of_its_own_passes_with_whatever_else_its_owner_keeps_there(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)  # made ahead, e.g. as a link to another disk: a run writes it
    (run / "metrics.jsonl").write_text("")
    assert _problems(f"output.dir={run}") == []
    (run / "notes.md").write_text("why this run")
    assert len(_problems(f"output.dir={run}")) == 1
    (run / ".recipe-run.lock").write_text("pid 1")  # every run takes it first: an earlier run's folder
    assert _problems(f"output.dir={run}") == []


def test_a_folder_where_a_run_writes_a_file_or_a_file_where_it_makes_a_folder_fails_validate(tmp_path) -> None:
    run = tmp_path / "run"
    (run / "metrics.jsonl").mkdir(parents=True)
    (run / "checkpoints").write_text("not a folder")
    (run / ".recipe-run.lock").write_text("pid 1")
    assert _problems(f"output.dir={run}") == [
        f"output.dir: {run / 'metrics.jsonl'} is a folder where a run keeps its metrics.jsonl file: move it away",
        f"output.dir: {run / 'checkpoints'} is a file where a run keeps its checkpoints folder: move it away",
    ]


def test_a_missing_data_file_set_on_the_command_line_is_placed_at_that_set(tmp_path) -> None:
    missing = tmp_path / "nope.txt"
    result = CliRunner().invoke(main, ["validate", str(TINY), "--set", f"data.train.path={missing}"])
    assert f"--set #1 (data.train.path={missing}): data.train.path: data file not found" in result.output


def test_a_schema_problem_does_not_hide_what_other_sections_and_stages_get_wrong(tmp_path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    losses = "losses: [{type: mse, on: matched}]"
    warm = f"{{name: warm, epochs: 1, steps: 5, trainable: [bolt_on], lr: {{bolt_on: 1.0e-3}}, {losses}}}"
    polish = f"{{name: polish, steps: 5, trainable: [student, bolt_on], lr: {{bolt_on: 1.0e-4}}, {losses}}}"
    problems = _problems("hardware.batch_sise=4", f"stages=[{warm}, {polish}]", f"data.train={empty}")
    assert [problem.split(":")[0] for problem in problems] == [
        "hardware.batch_sise",
        "stages[0]",
        "stages[1].lr",
        "data.train",
    ]
    # stages[0]: the schema's problem; its own lr is not looked at
    assert problems[1:] == [
        "stages[0]: give exactly one of `epochs` and `steps`: remove the other (set it to null where it is inherited)",
        "stages[1].lr: no learning rate for trainable part 'student'",
        f"data.train: {empty}: no prompts in file (one per line, blank lines are skipped)",
    ]


def test_validate_finds_what_infer_would_refuse_in_an_inline_pipeline_long_before_training() -> None:
    assert _problems("inference.pipeline_config={transformer: {num_layer: 3}, vae: {latent_channels: 16}}") == [
        "inference.pipeline_config.transformer.num_layer: unknown key 'num_layer'; did you mean 'num_layers'? (an "
        "argument of ChromaTransformer2DModel)"
    ]
    misspelt = _problems("inference.pipeline_config={seed: 0, transformr: {patch_size: 1}, vae: {}}")
    assert misspelt == [
        "inference.pipeline_config.transformr: unknown key 'transformr'; did you mean 'transformer'? "
        "(pipeline_config takes transformer, vae, scheduler, seed)",
        "inference.pipeline_config: needs a `transformer` mapping (the ChromaTransformer2DModel arguments)",
    ]  # not a joint_attention_dim of a default transformer nobody wrote


def test_a_max_length_past_the_architectures_positions_fails_validate() -> None:
    problems = _problems(
        "student.config.max_position_embeddings=512", "student.max_length=1024", "teacher.max_length=1024"
    )
    assert (
        "student.max_length: 1024 is beyond the 512 positions of the student's architecture (max_position_embeddings)"
        ": lower max_length, or give an architecture with more positions"
    ) in problems
    assert not any(problem.startswith("teacher.max_length") for problem in problems)  # T5: relative positions


def test_a_split_folder_given_as_the_cache_is_pointed_at_its_parent(tmp_path, cache_of_the_tiny_teacher):
    split = tmp_path / "cache" / "train"
    [problem] = _tiny_problems(tmp_path, f"teacher.cache.dir={split}")
    assert problem.endswith(
        f"teacher.cache.dir: {split} is the train split of a cache (it holds a manifest.json and shards), not a cache "
        f"folder: point teacher.cache.dir at its parent, {tmp_path / 'cache'}"
    )
