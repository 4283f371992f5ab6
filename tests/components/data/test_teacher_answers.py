"""Teacher answers: written batch by batch, continued after a kill, never read for other prompts or settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.data.teacher_answers import AnswersError, _same_making, read_answers, write_answers
from components.data.texts import TextCollator, TextSamples
from components.losses.logit_losses import IGNORED

PROMPTS = [f"prompt {i}" for i in range(7)]
IDENTITY = {"teacher": "t", "max_new_tokens": 4}


def _answer(start: int, prompts: list[str]) -> list[str]:
    return [f"answer to {p}" for p in prompts]


def test_answers_are_written_once_and_read_back_for_the_same_prompts_and_settings(tmp_path: Path) -> None:
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) is None
    written = write_answers(tmp_path, "train", PROMPTS, IDENTITY, _answer, batch_size=3)
    assert written == [f"answer to {p}" for p in PROMPTS]
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json", "train.jsonl"]
    with pytest.raises(AnswersError, match="made from other prompts or teacher settings than data.train"):
        read_answers(tmp_path, "train", PROMPTS[:-1], IDENTITY)
    with pytest.raises(AnswersError, match="delete it"):
        read_answers(tmp_path, "train", PROMPTS, {**IDENTITY, "max_new_tokens": 8})


def test_a_run_killed_midway_continues_after_its_last_whole_answer(tmp_path: Path) -> None:
    calls = []

    def killed_after_two_batches(start: int, prompts: list[str]) -> list[str]:
        if start >= 4:
            raise KeyboardInterrupt
        calls.append(start)
        return _answer(start, prompts)

    with pytest.raises(KeyboardInterrupt):
        write_answers(tmp_path, "train", PROMPTS, IDENTITY, killed_after_two_batches, batch_size=2)
    partial = tmp_path / "train.jsonl.partial"
    partial.write_text(partial.read_text() + '{"answer": "cut sh')  # a line the kill cut short
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) is None
    resumed: list[int] = []

    def rest(start: int, prompts: list[str]) -> list[str]:
        resumed.append(start)
        return _answer(start, prompts)

    assert write_answers(tmp_path, "train", PROMPTS, IDENTITY, rest, batch_size=2) == _answer(0, PROMPTS)
    assert calls == [0, 2] and resumed == [4, 6]
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["answer"] for line in lines] == _answer(0, PROMPTS)


def _two_answers_then_killed(directory: Path) -> None:
    """A writer killed during its second batch of two: a partial file of two answers."""

    def killed_after_one_batch(start: int, prompts: list[str]) -> list[str]:
        if start >= 2:
            raise KeyboardInterrupt
        return _answer(start, prompts)

    with pytest.raises(KeyboardInterrupt):
        write_answers(directory, "train", PROMPTS, IDENTITY, killed_after_one_batch, batch_size=2)


def test_answers_recorded_with_a_batch_size_go_on_under_another(tmp_path: Path) -> None:
    """Answers written before the batch size left their record (it changes no answer's meaning) still continue
    and still read back: lowering it is what a teacher out of memory needs."""
    _two_answers_then_killed(tmp_path)
    started = tmp_path / "train.jsonl.started.json"
    started.write_text(json.dumps({**json.loads(started.read_text()), "batch_size": 2}))  # as recorded before
    resumed: list[int] = []

    def rest(start: int, prompts: list[str]) -> list[str]:
        resumed.append(start)
        return _answer(start, prompts)

    assert write_answers(tmp_path, "train", PROMPTS, IDENTITY, rest, batch_size=1)[:2] == _answer(0, PROMPTS)[:2]
    assert resumed[0] == 2  # the two written answers were kept
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "batch_size": 16}))
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) is not None


def test_greedy_answers_recorded_with_a_seed_are_read_without_one_and_sampled_ones_compare_it(tmp_path: Path) -> None:
    write_answers(tmp_path, "train", PROMPTS, IDENTITY, _answer, batch_size=3)
    manifest = tmp_path / "train.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "answer_seed": 7}))  # as recorded before
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) is not None  # the settings now name no seed
    assert read_answers(tmp_path, "train", PROMPTS, {**IDENTITY, "answer_seed": 7}) is not None
    with pytest.raises(AnswersError, match="made from other prompts or teacher settings"):
        read_answers(tmp_path, "train", PROMPTS, {**IDENTITY, "answer_seed": 8})


def test_answers_recorded_with_a_file_times_fingerprint_are_read_and_other_weights_are_not(tmp_path: Path) -> None:
    """A record written when the weights were fingerprinted by file times: that digest proves nothing now."""
    now = {**IDENTITY, "weights": "content:aaaa"}
    write_answers(tmp_path, "train", PROMPTS, {**IDENTITY, "weights": "3f2a9c0d1e4b5a6c"}, _answer, batch_size=3)
    assert read_answers(tmp_path, "train", PROMPTS, now) is not None
    with pytest.raises(AnswersError, match=r"\(teacher.answers.max_new_tokens 4 -> 8\)"):  # the weights are not named
        read_answers(tmp_path, "train", PROMPTS, {**now, "max_new_tokens": 8})
    write_answers(tmp_path, "eval", PROMPTS, now, _answer, batch_size=3)
    with pytest.raises(AnswersError, match=r"\(the weights\)"):
        read_answers(tmp_path, "eval", PROMPTS, {**now, "weights": "content:bbbb"})


def test_half_written_answers_of_other_settings_are_refused_never_emptied(tmp_path: Path) -> None:
    _two_answers_then_killed(tmp_path)
    partial = tmp_path / "train.jsonl.partial"
    kept = partial.read_bytes()
    for identity in ({**IDENTITY, "max_new_tokens": 8}, IDENTITY):
        if identity is IDENTITY:
            (tmp_path / "train.jsonl.started.json").unlink()  # nothing records what made them
        with pytest.raises(AnswersError, match=r"train.jsonl.partial holds 2 answers, half-written from") as caught:
            write_answers(tmp_path, "train", PROMPTS, identity, _answer, batch_size=2)
        assert "move them away" in str(caught.value) and partial.read_bytes() == kept


class _Tokenizer:
    eos_token_id = 9

    def __call__(self, text, truncation=False, max_length=None, add_special_tokens=True):
        def one(value: str) -> list[int]:
            ids = [len(word) for word in value.split()]
            return ids[:max_length] if truncation else ids

        return {"input_ids": [one(t) for t in text] if isinstance(text, list) else one(text)}


def test_only_the_positions_predicting_the_answer_are_scored() -> None:
    samples = TextSamples(["aa bbb", "c"], _Tokenizer(), max_length=6, answers=["dddd e", "ff gg hh ii jj kk"])
    first, second = samples[0], samples[1]
    assert first == {"index": 0, "student_ids": [2, 3, 4, 1, 9], "answer_start": 2}
    # An answer too long for max_length keeps max_length - 1 tokens (its end-of-text cut), the prompt the rest.
    assert second == {"index": 1, "student_ids": [1, 2, 2, 2, 2, 2], "answer_start": 1}
    assert samples.token_lengths() == [5, 6]
    batch = TextCollator(pad_id=0)([first, second])
    per_row = batch.scored.split(batch.student_mask.sum(1).tolist())
    assert per_row[0].nonzero().flatten().tolist() == [1, 2, 3]  # positions 1..3 predict answer tokens 2..4
    assert batch.labels[:5].tolist() == [IGNORED, 4, 1, 9, IGNORED]
    assert torch.equal(batch.labels != IGNORED, batch.scored)


def test_an_answer_edited_into_something_else_than_text_names_its_line(tmp_path: Path) -> None:
    write_answers(tmp_path, "train", PROMPTS, IDENTITY, _answer, batch_size=3)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    lines[2] = '{"answer": null}'
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        AnswersError, match=r"train\.jsonl:3: not the answer record of prompt 3 \(cut short, edited by "
    ):
        read_answers(tmp_path, "train", PROMPTS, IDENTITY)


@pytest.mark.parametrize(
    "damage", ["cut_mid_record", "emptied", "garbage_line", "null_answer", "one_too_many", "line_removed", "swapped"]
)
def test_damaged_answers_name_the_place_and_following_the_advice_keeps_the_whole_ones(
    tmp_path: Path, damage: str
) -> None:
    import shlex
    import subprocess

    tmp_path = tmp_path / "answers with spaces"
    write_answers(tmp_path, "train", PROMPTS, IDENTITY, _answer, batch_size=3)
    final = tmp_path / "train.jsonl"
    text = final.read_text()
    kept = {"cut_mid_record": 4, "emptied": 0, "garbage_line": 5, "null_answer": 2, "one_too_many": 7}.get(damage, 3)
    lines = text.splitlines(keepends=True)
    final.write_text(
        {
            "cut_mid_record": "".join(lines[:4]) + lines[4][:9],
            "emptied": "",
            "garbage_line": "".join(lines[:5]) + "{garbage\n" + "".join(lines[6:]),
            "null_answer": "".join(lines[:2]) + '{"answer": null}\n' + "".join(lines[3:]),
            "one_too_many": text + lines[0],
            # every answer after it would be paired with its neighbour's prompt
            "line_removed": "".join(lines[:3] + lines[4:]),
            "swapped": "".join(lines[:3] + [lines[4], lines[3]] + lines[5:]),
        }[damage]
    )
    with pytest.raises(AnswersError) as caught:
        read_answers(tmp_path, "train", PROMPTS, IDENTITY)
    message = str(caught.value)
    assert f"keep its {min(kept, len(PROMPTS))} whole answers" in message and "delete" not in message
    command = message.split("`")[1]
    subprocess.run(command, shell=True, check=True, cwd=tmp_path)  # the advice, followed as written
    asked = []
    answers = write_answers(
        tmp_path, "train", PROMPTS, IDENTITY, lambda start, p: asked.append(start) or _answer(start, p), 3
    )
    assert answers == [f"answer to {p}" for p in PROMPTS]
    assert asked[:1] == ([kept] if kept < len(PROMPTS) else [])  # only the rest was written
    assert read_answers(tmp_path, "train", PROMPTS, IDENTITY) == answers
    assert shlex.split(command)[0] == "mv"


def test_a_garbled_manifest_is_named_not_the_answers(tmp_path: Path) -> None:
    write_answers(tmp_path, "train", PROMPTS, IDENTITY, _answer, batch_size=3)
    (tmp_path / "train.json").write_text("{nope")
    with pytest.raises(AnswersError, match=r"train\.json: unreadable .* nothing says which prompts and teacher made"):
        read_answers(tmp_path, "train", PROMPTS, IDENTITY)


def test_the_prompt_length_the_teacher_reads_is_part_of_what_the_answers_were_made_from() -> None:
    from recipe_runner.loader import load_recipe
    from recipe_runner.teacher_answers import answers_identity

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "examples" / "qwen_sequence_kd_tiny.yaml"
    short_prompts = load_recipe(recipe, ["teacher.max_length=4"], check=False).recipe
    assert answers_identity(short_prompts) != answers_identity(load_recipe(recipe, check=False).recipe)


def test_answers_written_after_the_end_of_text_of_the_prompt_are_not_read_as_answers_to_the_prompt() -> None:
    """Before, a tokenizer that appends end-of-text had the teacher answer after it; such records lack the key."""
    from recipe_runner.loader import load_recipe
    from recipe_runner.teacher_answers import answers_identity

    recipe = Path(__file__).resolve().parents[3] / "recipes" / "examples" / "qwen_sequence_kd_tiny.yaml"
    identity = answers_identity(load_recipe(recipe, check=False).recipe)
    assert identity["prompts_continued_without_end_of_text"] is True  # the shipped tokenizer appends it
    before = {key: value for key, value in identity.items() if key != "prompts_continued_without_end_of_text"}
    prompts = {"prompts_sha256": "x", "count": 1}
    assert not _same_making({**prompts, **before}, {**prompts, **identity})
