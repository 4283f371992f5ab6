"""Sequence-level distillation's data: the teacher's answer to every prompt, written once and reused.

Answers of a split go to `<dir>/<split>.jsonl`, one `{"answer": ..., "prompt": <digest>}` record per prompt, in
prompt order; the digest of its prompt lets a line that was removed or moved be caught, rather than every answer
after it being paired with its neighbour's prompt. They
are appended to `<split>.jsonl.partial` batch by batch (each batch flushed and fsynced), so a run stopped
midway continues where it stopped; the file is renamed into place once every prompt has its answer, beside a
manifest saying which prompts, teacher and settings made it. Answers made from other prompts or settings are
never read as these: the caller is told to move them away.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path

from components.atomic_files import atomic_path, write_json_atomic
from components.cache.manifest import ADDED_SINCE
from components.cache.weights import comparable
from components.data.prompts import prompt_key, prompts_digest
from components.errors import UserFacingError


class AnswersError(UserFacingError):
    """Answers on disk that do not belong to these prompts or settings."""


def _files(directory: Path, split: str) -> tuple[Path, Path, Path]:
    return directory / f"{split}.jsonl", directory / f"{split}.jsonl.partial", directory / f"{split}.json"


def _record(answer: str, prompt: str) -> str:
    return json.dumps({"answer": answer, "prompt": prompt_key(prompt)}) + "\n"


def _answer_of(line: str, prompt: str) -> str | None:
    """The answer a record gives `prompt`; None for a record that is cut short, edited into another shape, or of
    another prompt (answers written before records named their prompt are taken as they stand)."""
    try:
        record = json.loads(line)
        answer = record["answer"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(answer, str) or record.get("prompt", prompt_key(prompt)) != prompt_key(prompt):
        return None
    return answer


def _made_from(prompts: list[str], identity: dict) -> dict:
    return {"prompts_sha256": prompts_digest(prompts), "count": len(prompts), **identity}


# Recorded by answers written before it was known not to matter, and passed over when the settings now do not
# name them: how many prompts the teacher answered at once changes no answer's meaning (and lowering it is what a
# teacher out of memory needs), and greedy answers (temperature 0) do not depend on the seed.
_NOT_WHAT_MADE_THEM = ("batch_size", "answer_seed")


def _as_made_now(saved: dict, made: dict) -> dict:
    """The saved record without what says nothing against `made`: the keys above, and a weights fingerprint
    unknown on either side or taken another way (an older record's file times)."""
    kept = {key: value for key, value in saved.items() if key not in _NOT_WHAT_MADE_THEM or key in made}
    kept.update({key: made[key] for key in ADDED_SINCE if key in made and key not in saved})  # written before it
    if not comparable(kept.get("weights"), made.get("weights")):
        kept.pop("weights", None)
        kept.update({"weights": made["weights"]} if "weights" in made else {})
    return kept


def _same_making(saved: dict | None, made: dict) -> bool:
    return isinstance(saved, dict) and _as_made_now(saved, made) == made


def _differences(saved: dict, made: dict) -> str:
    """What differs, in words: the prompts as a whole, and each setting with its two values (digests unshown)."""
    saved = _as_made_now(saved, made)
    said = ["the prompts"] if any(saved.get(key) != made[key] for key in ("prompts_sha256", "count")) else []
    for key in sorted(set(made) - {"prompts_sha256", "count"}):
        before, now = saved.get(key, "not set"), made[key]
        if before != now:
            said.append(f"the {key}" if key in _DIGESTS else f"{_FIELDS.get(key, key)} {before!r} -> {now!r}")
    return ", ".join(said) or "its record"


_DIGESTS = ("teacher", "weights", "tokenizer", "special_tokens")
# The recipe fields behind identity keys that are named otherwise, for messages.
_FIELDS = {
    "prompt_tokens": "teacher.max_length",
    "answer_seed": "hardware.seed",
    "max_new_tokens": "teacher.answers.max_new_tokens",
    "temperature": "teacher.answers.temperature",
    "teacher_dtype": "teacher.dtype",
    "seed": "hardware.seed",
}  # identity keys whose values are digests, named but never shown


def _salvage(final: Path, partial: Path, manifest: Path, whole: int) -> str:
    started = partial.with_suffix(".started.json")
    pairs = ((final, partial), (manifest, started))
    moves = " && ".join(f"mv {shlex.quote(str(a))} {shlex.quote(str(b))}" for a, b in pairs)
    return f"to keep its {whole} whole answers and write the rest, `{moves}` and rerun `recipe cache` (or the run)"


def read_answers(directory: Path, split: str, prompts: list[str], identity: dict) -> list[str] | None:
    """The split's answers when complete and made from these prompts and settings; None when not written yet."""
    final, partial, manifest = _files(directory, split)
    if not final.is_file():
        return None
    try:
        made = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnswersError(
            f"{manifest}: unreadable ({exc}), so nothing says which prompts and teacher made {final}: move both "
            "away to write the answers again"
        ) from None
    if not _same_making(made, _made_from(prompts, identity)):
        differences = _differences(made, _made_from(prompts, identity))
        elsewhere = (
            f"or point teacher.answers.dir at a new directory and add `--reuse-from {directory}` to `recipe cache`, "
            "which takes the answers of the prompts already there and has the teacher answer only the others"
            if differences == "the prompts"
            else "or point teacher.answers.dir elsewhere"
        )
        raise AnswersError(
            f"{final} holds answers made from other prompts or teacher settings than data.{split} and "
            f"teacher.answers now ({differences}): delete it (and its .json) to write them again, {elsewhere}"
        )
    try:
        lines = final.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise AnswersError(f"{final}: unreadable ({exc}); delete it and its .json to write the answers again") from None
    answers: list[str] = []
    for number, (line, prompt) in enumerate(zip(lines, prompts, strict=False), 1):
        answer = _answer_of(line, prompt)
        if answer is None:
            raise AnswersError(
                f"{final}:{number}: not the answer record of prompt {number} (cut short, edited by hand, or a line "
                "before it removed or moved): " + _salvage(final, partial, manifest, number - 1)
            )
        answers.append(answer)
    if len(lines) != len(prompts):
        raise AnswersError(
            f"{final} holds {len(lines)} answers for {len(prompts)} prompts (cut short, or edited by hand): "
            + _salvage(final, partial, manifest, min(len(lines), len(prompts)))
        )
    return answers


def _started_from(started: Path) -> dict | None:
    try:
        return json.loads(started.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _refuse_other_partial(partial: Path, started: Path, split: str) -> None:
    """Half-written answers of other prompts or settings can be hours of generation: never emptied unasked."""
    if not partial.is_file() or partial.stat().st_size == 0:
        return
    lines = len(partial.read_bytes().splitlines())
    why = "other prompts or teacher settings" if started.is_file() else "prompts and settings nothing records"
    moves = " ".join(shlex.quote(str(p)) for p in (partial, started) if p.is_file())
    raise AnswersError(
        f"{partial} holds {lines} answers, half-written from {why} than data.{split} and teacher.answers now: "
        f"put back the settings that made them (see {started.name}) to continue them, or move them away "
        f"(`mkdir -p old-answers && mv {moves} old-answers/`) to write the answers anew"
    )


def write_answers(
    directory: Path,
    split: str,
    prompts: list[str],
    identity: dict,
    answer_batch: Callable[[int, list[str]], list[str]],
    batch_size: int,
    progress: Callable[[int], None] = lambda done: None,
    known: dict[str, str] | None = None,
) -> list[str]:
    """Answers of every prompt, continuing a partial file of the same prompts; `answer_batch(start, prompts)`
    answers prompts of which the first is at index `start`. `known`: answers by `prompt_key` written before (for
    other data), taken as they are (see `reusable_answers`)."""
    final, partial, manifest = _files(directory, split)
    directory.mkdir(parents=True, exist_ok=True)
    made = _made_from(prompts, identity)
    started = partial.with_suffix(".started.json")
    done: list[str] = []
    if _same_making(_started_from(started), made):
        lines = partial.read_text(encoding="utf-8").splitlines() if partial.is_file() else []
        for line, prompt in zip(lines, prompts, strict=False):
            answer = _answer_of(line, prompt)
            if answer is None:  # cut short by a kill, edited by hand, or a line removed: answered again from here
                break
            done.append(answer)
        with atomic_path(partial) as tmp:  # a kill now leaves the old partial whole, never an emptied one
            tmp.write_text("".join(_record(a, p) for a, p in zip(done, prompts, strict=False)), encoding="utf-8")
    else:
        _refuse_other_partial(partial, started, split)
        with atomic_path(partial) as tmp:
            tmp.write_text("", encoding="utf-8")
        write_json_atomic(started, made)
    progress(len(done))
    known = known or {}
    with partial.open("a", encoding="utf-8") as handle:
        start = len(done)
        while start < len(prompts):
            # The next batch_size prompts `known` lacks, and every known one before the last of them.
            asked, end = [], start
            while end < len(prompts) and len(asked) < batch_size:
                asked += [end] if prompt_key(prompts[end]) not in known else []
                end += 1
            given = dict(zip(asked, answer_batch(asked[0], [prompts[i] for i in asked]), strict=True)) if asked else {}
            answers = [given[i] if i in given else known[prompt_key(prompts[i])] for i in range(start, end)]
            handle.write("".join(_record(a, p) for a, p in zip(answers, prompts[start:end], strict=True)))
            handle.flush()
            os.fsync(handle.fileno())
            done += answers
            progress(len(done))
            start = end
    write_json_atomic(manifest, made)
    os.replace(partial, final)
    started.unlink()
    return done


def _written_answers(data: Path) -> tuple[dict[str, str], int]:
    """The answers of a finished or half-written file by prompt key, and how many records name no prompt (written
    before records did); a record cut short by a kill is passed over."""
    found, unnamed = {}, 0
    for line in data.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("answer"), str):
            continue
        if not isinstance(record.get("prompt"), str):
            unnamed += 1
            continue
        found[record["prompt"]] = record["answer"]
    return found, unnamed


def reusable_answers(source: Path, identity: dict) -> tuple[dict[str, str], list[str]]:
    """Answers an earlier teacher.answers.dir holds, finished or half-written, by prompt key: those of files made
    with these teacher settings (whatever prompts), so edited data has the teacher answer only what is new. Also
    returns what could not be used, in words. The directory is only read."""
    if not source.is_dir():
        raise AnswersError(
            f"--reuse-from {source}: no such directory (give an earlier teacher.answers.dir, or drop --reuse-from)"
        )
    known: dict[str, str] = {}
    skipped: list[str] = []
    for made_file in sorted(source.glob("*.json")):
        started = made_file.name.endswith(".started.json")
        data = (
            made_file.with_name(made_file.name.removesuffix(".started.json") + ".partial")
            if started
            else (made_file.with_suffix(".jsonl"))
        )
        if not data.is_file():
            continue
        try:
            saved = json.loads(made_file.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
            answers, unnamed = _written_answers(data)
        except (OSError, ValueError) as exc:
            skipped.append(f"{data}: unreadable ({exc})")
            continue
        saved = {
            key: value for key, value in _as_made_now(saved, identity).items() if key not in ("prompts_sha256", "count")
        }
        if saved != identity:
            said = _differences(
                {**saved, "prompts_sha256": None, "count": None}, {**identity, "prompts_sha256": None, "count": None}
            )
            skipped.append(f"{data}: made with other teacher settings ({said})")
            continue
        if unnamed:
            skipped.append(f"{data}: {unnamed} answer(s) written before answers named their prompt")
        for key, answer in answers.items():
            known.setdefault(key, answer)
    if not known:
        cache = any((split / "manifest.json").is_file() for split in source.iterdir() if split.is_dir())
        why = "; ".join(skipped) or (
            "it is a teacher.cache.dir, not a teacher.answers.dir" if cache else "it holds no answers"
        )
        raise AnswersError(
            f"--reuse-from {source}: no teacher answers can be taken from it: {why}; give an earlier "
            "teacher.answers.dir made with the recipe's teacher settings (put back a setting named above), or drop "
            "--reuse-from"
        )
    return known, skipped
