"""Fill the teacher cache of a recipe: both data splits, resuming shard by shard."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from components.cache.manifest import MANIFEST, mismatches, read_manifest, teacher_identity
from components.cache.reuse import ReusableRows, reuse_hint
from components.cache.shards import (
    content_damage,
    missing_shard_bytes,
    shard_count,
    shard_damage,
    shard_name,
    shard_rows,
    split_digest,
)
from components.cache.writer import DTYPES, CacheMismatchError, Reuse, prepare_split, write_split
from components.data.prompts import prompt_key, prompts_digest
from components.disk_space import NotEnoughDiskSpace, require_free
from components.errors import UserFacingError
from components.models import build_model, freeze, hidden_width, load_tokenizer, pad_id, resolve_config
from components.models.compilation import compile_for_varied_lengths, compile_wanted
from components.models.downloads import needed_from, require_downloaded
from components.models.loading import quiet_transformers_bars
from recipe_runner.cache_processes import CacheProcesses
from recipe_runner.next_commands import FROM_PYTHON, NextCommands
from recipe_runner.trainer.parts import RunSetupError, cache_complete, split_prompts
from recipe_runner.trainer.run_dir import DirectoryLock
from schemas import Recipe
from schemas.models import TeacherCache


class CacheSetupError(UserFacingError, RuntimeError):
    """The recipe asks for no cache, or an existing cache was made differently."""


@contextmanager
def _write_errors(split_dir: Path, rerun: str) -> Iterator[None]:
    """A shard that cannot be written (disk full, say) is one clear line: finished shards are complete files."""
    try:
        yield
    except OSError as exc:
        done = len(list(split_dir.glob("shard-*.safetensors")))
        raise CacheSetupError(
            f"could not write a shard into {split_dir}: {exc.strerror or exc}; the {done} finished shard(s) are "
            f"complete and nothing partial was left: free space and rerun `{rerun}`, it goes on from there"
        ) from None


Splits = list[tuple[str, Path, list[str], list[list[int]], str]]  # name, folder, prompts, token ids, digest


def _check_space(recipe: Recipe, splits: Splits) -> int:
    """Before the teacher loads (minutes for T5-XXL) and encodes for hours: the shards to write must fit.
    Returns how many shards are still to write (missing or damaged)."""
    spec = recipe.teacher_cache
    assert spec is not None
    width = hidden_width(resolve_config(recipe.teacher))
    itemsize = DTYPES[spec.dtype].itemsize
    shards, needed = 0, 0
    for _, split_dir, _, ids, made_from in splits:
        count, size = missing_shard_bytes(
            split_dir, ids, spec.shard_size, recipe.teacher.chroma_mask, width, itemsize, made_from
        )
        shards, needed = shards + count, needed + size
    require_free(
        spec.dir,
        needed,
        f"{shards} cache shard(s) still to write ({width} {spec.dtype} values per token)",
        "free space, or point teacher.cache.dir at a larger disk (--set teacher.cache.dir=...)",
    )
    return shards


def _cannot_write(spec: TeacherCache, exc: OSError) -> CacheSetupError:
    return CacheSetupError(
        f"{spec.dir} cannot be written ({exc.strerror or exc}) and the cache there is not complete for this recipe: "
        "point teacher.cache.dir at a directory you can write (--set teacher.cache.dir=...)"
    )


CACHE_LOCK = ".recipe-cache.lock"


def build_teacher_cache(
    recipe: Recipe,
    batch_tokens: int | None = None,
    progress: bool = True,
    processes: CacheProcesses | None = None,
    verify: bool = False,
    commands: NextCommands = FROM_PYTHON,
    reuse_from: Path | None = None,
) -> dict[str, dict]:
    """Returns per split: prompt count, shards written, tokens encoded and prompts copied (by every process), this
    process's seconds and rewritten shards, bytes on disk. Under a launcher each process encodes its share of the
    shards. `verify` also reads every finished shard of this process's share and checks its values against their
    sum. `reuse_from`: an earlier cache whose rows for the same prompts are copied instead of encoded."""
    processes = processes or CacheProcesses(recipe.hardware)
    spec = recipe.teacher_cache
    if spec is None:
        raise CacheSetupError("the recipe has no teacher.cache section; add `cache: {dir: ...}` to the teacher")
    if reuse_from is not None and not Path(reuse_from).exists() and cache_complete(recipe):
        reuse_from = None  # a rerun of a finished cache whose source was deleted since: nothing is left to copy
    if reuse_from is not None and Path(reuse_from).resolve().is_relative_to(Path(spec.dir).resolve()):
        raise CacheSetupError(
            f"--reuse-from {reuse_from} is teacher.cache.dir itself (or in it): rows are copied into a new cache, "
            "never rewritten in place; point teacher.cache.dir at a new directory (--set teacher.cache.dir=...)"
        )
    # Two caches writing one directory would both encode everything; the second is refused instead, and so is a
    # cache while a run reads the directory (shards replaced under it would pair its prompts with other targets).
    lock, unwritable = _lock_for_every_process(spec, processes)
    try:
        if processes.world == 1 and unwritable is None:  # under several processes another may be writing now
            _remove_partial_shards(Path(spec.dir))
        rerun = commands.command("cache")
        return _build(recipe, spec, batch_tokens, progress, processes, unwritable, verify, rerun, reuse_from)
    finally:
        if lock is not None:
            lock.release()


def _lock_for_every_process(
    spec: TeacherCache, processes: CacheProcesses
) -> tuple[DirectoryLock | None, OSError | None]:
    """The first process takes the lock for all of them; when it is refused, every process stops (the others
    would otherwise encode their shares, then fail in a collective the first never joins). A directory nobody
    here can write (a team's cache on a read-only mount) gets no lock: returned as the error, so that a cache
    that is already complete still checks out and an incomplete one stops with a clear message."""
    lock = refused = unwritable = None
    try:
        lock = cache_lock(spec).acquire()  # a no-op in processes other than the first
    except RunSetupError as exc:
        refused = exc
    except OSError as exc:
        unwritable = exc
    if processes.world > 1:
        any_refused, any_unwritable = processes.total(float(refused is not None), float(unwritable is not None))
        if any_refused and refused is None:
            raise CacheSetupError(f"{spec.dir}: the first process of this launch could not lock it (see its message)")
        if any_unwritable and unwritable is None:
            unwritable = OSError(f"the first process of this launch cannot write {spec.dir}")
    if refused is not None:
        raise refused
    return lock, unwritable


def cache_lock(spec: TeacherCache) -> DirectoryLock:
    """The lock of a cache directory: `recipe cache` holds it alone, runs reading the cache share it."""
    return DirectoryLock(
        Path(spec.dir), CACHE_LOCK, "recipe cache", "point teacher.cache.dir elsewhere", reader="a `recipe run`"
    )


def hold_cache_for_reading(recipe: Recipe) -> DirectoryLock | None:
    """A shared hold on the recipe's cache directory, if there is one: no `recipe cache` writes it meanwhile."""
    spec = recipe.teacher_cache
    return cache_lock(spec).acquire(shared=True) if spec is not None and Path(spec.dir).is_dir() else None


def _remove_partial_shards(cache_dir: Path) -> None:
    """A killed `recipe cache` leaves the shard it was writing under a temporary name, as large as a shard and
    never read: with the lock held, nobody else is writing one."""
    for partial in cache_dir.glob("*/.shard-*.tmp"):
        partial.unlink(missing_ok=True)


def _build(
    recipe: Recipe,
    spec: TeacherCache,
    batch_tokens: int | None,
    progress: bool,
    processes: CacheProcesses,
    unwritable: OSError | None,
    verify: bool,
    rerun: str,
    reuse_from: Path | None,
) -> dict[str, dict]:
    train, held_out = split_prompts(recipe)
    require_downloaded(needed_from("teacher", recipe.teacher), "recipe cache")
    tokenizer = load_tokenizer(recipe.teacher)
    identity = teacher_identity(recipe)
    reusable = ReusableRows(reuse_from, identity) if reuse_from is not None else None  # before anything is written
    splits, started = [], []
    for split, prompts in (("train", train), ("eval", held_out)):
        if not prompts:
            continue
        split_dir = Path(spec.dir) / split
        if not (split_dir / MANIFEST).exists():
            started.append(split_dir)
        try:
            manifest = prepare_split(split_dir, identity, prompts_digest(prompts), len(prompts), spec.shard_size)
        except CacheMismatchError as exc:
            same_teacher = not mismatches(read_manifest(split_dir) or {}, identity)
            hint = reuse_hint(spec.dir) if same_teacher else "or point teacher.cache.dir elsewhere"
            raise CacheSetupError(f"{exc}; delete it {hint}") from None
        except OSError as exc:  # no manifest yet, and none can be written
            raise _cannot_write(spec, unwritable or exc) from None
        ids = tokenizer(prompts, truncation=True, max_length=recipe.teacher.max_length)["input_ids"]
        splits.append((split, split_dir, prompts, ids, split_digest(manifest)))
    damaged = _damaged_values(splits, spec.shard_size, processes, unwritable) if verify else {}
    try:
        to_write = _check_space(recipe, splits)  # every process: the same answer, so all stop or none
    except NotEnoughDiskSpace:
        # Nothing was encoded: the manifests written just now would hold a rerun with other settings (a smaller
        # cache dtype, say) to these ones.
        for split_dir in started if processes.is_main else []:
            (split_dir / MANIFEST).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                split_dir.rmdir()  # only when empty
        raise
    if to_write and unwritable is not None:
        raise _cannot_write(spec, unwritable)
    copies = (
        {
            split: _copies(reusable, split_dir, prompts, spec.shard_size, made_from, processes.owns)
            for split, split_dir, prompts, _, made_from in splits
        }
        if reusable is not None
        else {}
    )
    device = processes.device
    teacher = None
    reports = {}
    for split, split_dir, prompts, ids, made_from in splits:
        reuse, encodes = copies.get(split, (None, bool(to_write)))
        if teacher is None and encodes:  # a complete cache is only checked: no teacher load (minutes for T5-XXL)
            hw = recipe.hardware
            with contextlib.nullcontext() if progress else quiet_transformers_bars():  # --no-progress: no bar at all
                teacher = freeze(
                    build_model(recipe.teacher, "teacher", device=device, seed=hw.seed, fused_kernels=hw.fused_kernels)
                )
            if compile_wanted(hw.compile, device.type):
                compile_for_varied_lengths(teacher)
        shards = filter(processes.owns, range(shard_count(len(prompts), spec.shard_size)))
        mine = sum(hi - lo for lo, hi in (shard_rows(shard, len(prompts), spec.shard_size) for shard in shards))
        shown = progress and processes.is_main
        desc = f"cache {split}" + (" (this process's share)" if processes.world > 1 else "")
        with tqdm(total=mine, desc=desc, disable=not shown) as bar, _write_errors(split_dir, rerun):
            report = write_split(
                split_dir,
                ids,
                teacher,
                shard_size=spec.shard_size,
                batch_tokens=batch_tokens or spec.batch_tokens,
                chroma_mask=recipe.teacher.chroma_mask,
                dtype=spec.dtype,
                pad_id=pad_id(tokenizer),
                device=device,
                progress=bar.update,
                owns=processes.owns,
                split=made_from,
                prompt_keys=[prompt_key(prompt) for prompt in prompts],
                reuse=reuse,
            )
        processes.wait_for_everyone()  # every shard is on disk before anyone sizes the split
        report["shards_written"], report["tokens"], report["reused"] = (
            int(n) for n in processes.total(report["shards_written"], report["tokens"], report["reused"])
        )
        # The split's own shards only: a stray file of another layout is no part of it.
        names = (shard_name(shard) for shard in range(shard_count(len(prompts), spec.shard_size)))
        size = sum(path.stat().st_size for path in (split_dir / name for name in names) if path.is_file())
        report["rewritten"] = damaged.get(split, []) + report["rewritten"]
        reports[split] = {**report, "count": len(prompts), "bytes": size, "bytes_per_prompt": size / len(prompts)}
        reports[split]["not_reused"] = reusable.skipped if reusable is not None else []
    return reports


def _copies(
    reusable: ReusableRows,
    split_dir: Path,
    prompts: list[str],
    shard_size: int,
    made_from: str,
    owns: Callable[[int], bool],
) -> tuple[Reuse, bool]:
    """What `write_split` copies from the earlier cache (rows of whole, verified shards only), and whether some
    prompt of this process's shards still to write is left for the teacher."""
    keys = [prompt_key(prompt) for prompt in prompts]
    wanted = set()
    for shard in filter(owns, range(shard_count(len(prompts), shard_size))):
        lo, hi = shard_rows(shard, len(prompts), shard_size)
        final = split_dir / shard_name(shard)
        if not (final.exists() and shard_damage(final, lo, hi, made_from) is None):
            wanted.update(keys[lo:hi])
    usable = reusable.usable(wanted)
    return (lambda i: reusable.rows(keys[i]) if keys[i] in usable else None), bool(wanted - usable)


def _damaged_values(
    splits: Splits,
    shard_size: int,
    processes: CacheProcesses,
    unwritable: OSError | None,
) -> dict[str, list[str]]:
    """Shards of this process's share whose values differ from their sum, removed so that they are encoded again
    (a damaged shard holds nothing worth keeping); in a cache nobody here can write, a refusal naming them."""
    found: list[tuple[str, Path, str]] = []
    for split, split_dir, prompts, _, _ in splits:
        for shard in filter(processes.owns, range(shard_count(len(prompts), shard_size))):
            path = split_dir / shard_name(shard)
            why = content_damage(path) if path.is_file() else None
            if why is not None:
                found.append((split, path, why))
    if found and unwritable is not None:
        named = ", ".join(f"{path} ({why})" for _, path, why in found)
        raise CacheSetupError(
            f"damaged cache shard(s): {named}; the cache cannot be written here ({unwritable.strerror}): ask its "
            "owner to rerun `recipe cache --verify`, or copy it to a writable place"
        )
    damaged: dict[str, list[str]] = {}
    for split, path, why in found:
        path.unlink()
        damaged.setdefault(split, []).append(f"{path} ({why})")
    return damaged
