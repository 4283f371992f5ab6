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
