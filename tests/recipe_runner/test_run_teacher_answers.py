"""The teacher's answers as a run or `recipe cache` asks for them (the file format: components/data)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from recipe_runner.loader import load_recipe
from recipe_runner.next_commands import NextCommands
from recipe_runner.teacher_answers import AnswersSetupError, answers_identity, teacher_answers

SEQUENCE_KD = Path(__file__).parents[2] / "recipes" / "examples" / "qwen_sequence_kd_tiny.yaml"


def test_missing_answers_under_a_launcher_ask_for_one_process_to_write_them(tmp_path, monkeypatch):
    sets = (f"teacher.answers.dir={tmp_path / 'answers'}",)
    recipe = load_recipe(SEQUENCE_KD, sets).recipe
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    commands = NextCommands.of_this_process(str(SEQUENCE_KD), sets, False)
    with pytest.raises(AnswersSetupError) as refused:
        teacher_answers(recipe, {"train": ["a prompt"]}, torch.device("cpu"), progress=False, commands=commands)
    said = str(refused.value)
    assert "a teacher writes them in one process: run `recipe cache " in said  # not the launcher it was given
    assert said.endswith("` without a launcher first, then launch the run")
    assert not (tmp_path / "answers").exists()


def test_the_seed_is_part_of_sampled_answers_not_of_greedy_ones():
    greedy = load_recipe(SEQUENCE_KD).recipe
    sampled = load_recipe(SEQUENCE_KD, ["teacher.answers.temperature=0.7"]).recipe
    assert "answer_seed" not in answers_identity(greedy) and answers_identity(sampled)["answer_seed"] == 0


def test_a_disk_that_fills_while_answers_are_written_is_one_line_with_what_is_kept(tmp_path, monkeypatch):
    import errno

    sets = (f"teacher.answers.dir={tmp_path / 'answers'}",)
    recipe = load_recipe(SEQUENCE_KD, sets).recipe

    def full_after_three(directory, split, prompts, identity, answer, batch_size, progress, known):
        progress(3)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("recipe_runner.teacher_answers.write_answers", full_after_three)
    commands = NextCommands(str(SEQUENCE_KD), sets)
    with pytest.raises(AnswersSetupError) as refused:
        teacher_answers(recipe, {"train": ["a", "b", "c", "d"]}, torch.device("cpu"), progress=False, commands=commands)
    assert str(refused.value) == (
        f"could not write the teacher's answers for train into {tmp_path / 'answers'}: No space left on device; the "
        "3 answers written before it are kept: free space (or point teacher.answers.dir elsewhere) and rerun "
        f"`{commands.command('cache')}`, which goes on from there"
    )


def test_validate_names_answers_written_under_other_settings_at_teacher_answers_dir(tmp_path):
    from components.data.teacher_answers import write_answers
    from recipe_runner.checks import semantic_problems
    from recipe_runner.trainer.parts import split_prompts

    sets = [f"teacher.answers.dir={tmp_path / 'answers'}"]
    recipe = load_recipe(SEQUENCE_KD, sets).recipe
    for split, prompts in zip(("train", "eval"), split_prompts(recipe), strict=True):
        write_answers(tmp_path / "answers", split, prompts, answers_identity(recipe), lambda s, p: ["x"] * len(p), 64)
    assert semantic_problems(load_recipe(SEQUENCE_KD, sets, check=False)) == []
    longer = load_recipe(SEQUENCE_KD, [*sets, "teacher.answers.max_new_tokens=32"], check=False)
    said = [str(problem) for problem in semantic_problems(longer)]
    assert len(said) == 2 and all("teacher.answers.dir: " in line for line in said)  # train and eval
    assert "(teacher.answers.max_new_tokens 24 -> 32): delete it" in said[0]
