"""`recipe bench`: the --small CLI run end to end, the shipped length distribution, the FLOP formula."""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe_runner.bench.aligner import run_aligner
from recipe_runner.bench.flops import FlopPart, part_flops, peak_flops, step_flops
from recipe_runner.bench.lengths import LENGTHS_FILE, generate_lengths, load_lengths
from recipe_runner.bench.models import random_weights_recipe
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.plan import build_plan

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
REAL = REPO / "recipes" / "t5_to_qwen.yaml"


def _bench(tmp_path: Path, recipe: Path, *extra: str) -> dict:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(recipe), "--small", "--json", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert "training" in result.output and "SMALL" in result.output
    return json.loads(out.read_text())


def test_small_tiny_bench_reports_every_figure(tmp_path: Path) -> None:
    report = _bench(tmp_path, TINY, "--peak-tflops", "1", "--profile", str(tmp_path / "profile.txt"))
    profile = (tmp_path / "profile.txt").read_text()
    assert "aten::" in profile and profile.startswith("# recipe bench --profile")  # a rerun may replace it
    assert report["small"] is True and report["environment"]["device"] == "cpu"
    assert report["environment"]["torch_version"] and report["batch_size"] == 16
    assert "6N" in report["flop_formula"] and report["units"]
    training = report["training"]
    assert training["timed_steps"] == 4 and training["step_time_s"] > training["update_time_s"] > 0
    assert training["real_tokens_per_s"] > 0 and training["model_flops_per_step"] > 0
    assert 0 <= training["padding_fraction"] < 0.5  # length-bucketed, not padded to 512
    assert training["mfu"] == pytest.approx(training["achieved_tflops"] / 1.0)
    peak = training["peak_memory_bytes"]  # a CPU's: a lower bound, or null where none could be seen
    assert (peak is None or peak > 0) and training["plan_estimate_bytes"] > 0 and not training["plan_counts_runtime"]
    assert report["recipe_file"] == str(TINY) and report["overrides"] == [] and report["full_depth"] is False
    assert report["hardware"]["attention"] == "sdpa" and "fused_kernels" in report["hardware"]
    assert training["last_loss"] == training["last_loss"]  # finite, not NaN
    assert training["compile_warmup_s"] is None and training["graphs_compiled_while_timed"] is None
    phases = {"batch", "student", "bolt_on", "teacher", "loss", "update"}
    phases |= {"loss_backward", "bolt_on_backward", "student_backward"}
    assert set(training["ops_per_step"]) == set(training["phase_time_s"]) == phases
    worked = phases - {"teacher", "batch"}  # the tiny recipe has a teacher cache; its CPU batches stay in place
    assert all(training["ops_per_step"][phase] > 0 for phase in worked), training["ops_per_step"]
    assert all(training["phase_time_s"][phase] > 0 for phase in worked), training["phase_time_s"]
    assert training["ops_per_step"]["teacher"] == 0 and training["update_time_s"] == training["phase_time_s"]["update"]
    teacher = report["teacher"]
    assert teacher["real_tokens_per_s"] > 0 and teacher["bytes_per_prompt"] > 0
    assert teacher["forward_real_tokens_per_s"] > 0
    assert teacher["forward_mfu"] == pytest.approx(teacher["forward_tflops"] / 1.0)
    assert 0 < teacher["ratio_vs_padded_same_dtype"] < 1
    loader = report["loader"]
    assert loader["batches"] >= 16 and loader["prompts_per_s"] > 0 and loader["real_student_tokens_per_s"] > 0
    assert loader["teacher_width"] == 64 and loader["teacher_target_bytes_per_s"] > 0 and not loader["pinned"]
    assert loader["training_tokens_per_s"] == training["real_tokens_per_s"]
    assert loader["headroom"] == pytest.approx(loader["real_student_tokens_per_s"] / training["real_tokens_per_s"])
    aligner = report["aligner"]
    assert aligner["prompts_per_s"] > 0 and aligner["tokenizers"].startswith("recipe's")
    for path in ("qwen", "t5"):
        figures = report["inference"][path]
        assert figures["median_latency_ms"] > 0 and figures["p90_latency_ms"] >= figures["median_latency_ms"]
        assert figures["weight_bytes"] == figures["full_size_weight_bytes"] > 0  # tiny: nothing to shrink


@pytest.mark.slow
@pytest.mark.compile_backend("eager")  # the graphs are what counts here; the compiled run test traces the backward
def test_compiled_bench_compiles_before_the_clock(tmp_path: Path, compiled_tiny: list[str]) -> None:
    sets = [arg for value in compiled_tiny for arg in ("--set", value)]
    report = _bench(tmp_path, TINY, "--only", "training", "--only", "teacher", *sets)
    training, teacher = report["training"], report["teacher"]
    assert training["compiled"] and training["compile_warmup_s"] > 0
    assert training["graphs_compiled_while_timed"] == 0
    assert teacher["compile_warmup_s"] > 0 and teacher["forward_real_tokens_per_s"] > 0
    assert training["ops_per_step"] is None  # compiled graphs are not counted op by op


def test_token_batches_carry_more_prompts_and_less_padding_than_16_prompts(tmp_path: Path) -> None:
    by_prompts = _bench(tmp_path, TINY, "--only", "training")["training"]
    budget = ("--set", "hardware.batch_size=256", "--set", "hardware.batch_tokens=4096")
    by_tokens = _bench(tmp_path, TINY, "--only", "training", *budget)["training"]
    assert by_prompts["batch_tokens"] is None and by_prompts["real_prompts_per_step"] == 16
    assert by_tokens["batch_tokens"] == 4096 and by_tokens["real_prompts_per_step"] > 16
    assert by_tokens["padding_fraction"] < by_prompts["padding_fraction"]


def test_checkpointing_adds_a_forward_to_the_ops_a_step_dispatches(tmp_path: Path) -> None:
    """What a host-bound GPU step pays for: recomputing activations dispatches the forward's ops again."""
    plain = _bench(tmp_path, TINY, "--only", "training")["training"]["ops_per_step"]
    recomputed = _bench(tmp_path, TINY, "--only", "training", "--set", "hardware.gradient_checkpointing=true")
    ops = recomputed["training"]["ops_per_step"]
    assert all(ops[phase] == plain[phase] for phase in ops if phase != "student_backward")
    again = ops["student_backward"] - plain["student_backward"]
    assert 0 < again <= plain["student"]  # the student's layers again; bolt-on and loss are not recomputed


def test_small_real_recipe_meets_cache_size_target(tmp_path: Path) -> None:
    report = _bench(tmp_path, REAL, "--only", "teacher", "--only", "inference")
    assert report["shrink_factor"] == 16 and report["training"] is None
    assert report["teacher"]["ratio_vs_padded_bf16"] <= 0.25
    assert report["inference"]["t5"]["full_size_weight_bytes"] > 9e9  # 4.76B bf16, counted on meta
    # A CPU emulates bf16 matmuls: --small computes in float32 there and says so; full sizes keep bf16.
    assert report["precision"] == "fp32" and report["inference"]["t5"]["dtype"] == "float32"
    assert any(
        note.startswith("--small on a CPU computes in float32 (the recipe has precision bf16")
        for note in report["notes"]
    )
    assert report["inference"]["qwen"]["weight_bytes"] < report["inference"]["qwen"]["full_size_weight_bytes"]


def test_shipped_lengths_have_the_promised_shape() -> None:
    lengths = load_lengths()
    assert LENGTHS_FILE.is_file() and lengths == generate_lengths()
    assert len(lengths) == 2000
    assert 20 <= statistics.median(lengths) <= 150
    assert max(lengths) <= 512 and sum(n > 256 for n in lengths) >= 40
    assert sum(20 <= n <= 150 for n in lengths) / len(lengths) > 0.7


def test_flop_formula_hand_computed() -> None:
    trained = FlopPart(name="student", role="trained", dense_params=1000, attention=2 * 64)
    frozen = FlopPart(name="teacher", role="frozen_forward", dense_params=500)
    lora_base = FlopPart(name="base", role="frozen_backprop", dense_params=100)
    lengths = [10, 20]
    # trained: 3 * (2*1000*30 + 4*128*(100+400)) = 3 * (60_000 + 256_000)
    assert part_flops(trained, lengths) == 948_000
    assert part_flops(frozen, lengths) == 2 * 500 * 30
    assert part_flops(lora_base, lengths) == 2 * (2 * 100 * 30)
    assert step_flops([trained, frozen], lengths) == 978_000


def test_peak_table_and_override() -> None:
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16", None)[0] == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16", None)[0] == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp16", None)[0] == 312e12
    assert peak_flops("x86_64", "bf16", None)[0] is None
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32", None)[0] is None
    assert peak_flops("x86_64", "fp32", 2.5)[0] == 2.5e12


def test_small_keeps_widths_chained_and_full_size_is_untouched() -> None:
    recipe = load_recipe(REAL).recipe
    small, factor = random_weights_recipe(recipe, small=True)
    plan = build_plan(small)  # widths chain student -> bolt-on -> teacher, on the meta device
    assert factor == 16 and plan.teacher.width == 256 and plan.student.width == 64
    assert small.teacher.config is not None and small.teacher.model is None
    assert small.student.config["num_hidden_layers"] == 2 and small.teacher.config["num_layers"] == 2
    deep, _ = random_weights_recipe(recipe, small=True, keep_depth=True)
    assert deep.student.config["num_hidden_layers"] == 28 and deep.teacher.config["num_layers"] == 24
    assert deep.student.config["hidden_size"] == small.student.config["hidden_size"]
    full, _ = random_weights_recipe(recipe, small=False)
    assert build_plan(full).teacher.params == build_plan(recipe).teacher.params


def test_small_moves_feature_layer_maps_to_the_same_relative_depth_of_the_shrunk_models() -> None:
    """A map of a 28-layer student's layers stopped the --small bench with an IndexError on a 2-layer one."""
    features = "stages.0.losses=[{type: hidden_states, layers: {7: 16, 14: 32, 28: 64, -1: -1}}, "
    features += "{type: attention, layers: {27: 63, 0: 0}}]"
    recipe = load_recipe(REPO / "recipes" / "qwen_32b_to_7b_features.yaml", [features], check=False).recipe
    small, _ = random_weights_recipe(recipe, small=True)
    hidden, attention = small.stages[0].losses
    assert hidden.layers == {0: 0, 1: 1, 2: 2, -1: -1}  # hidden states 0..2 of 2 layers (0 the embeddings)
    assert attention.layers == {1: 1, 0: 0}  # layers 0..1
    deep, _ = random_weights_recipe(recipe, small=True, keep_depth=True)
    assert deep.stages == recipe.stages


def test_full_depth_needs_small_and_a_refused_bench_makes_no_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", str(TINY), "--full-depth", "--json", str(tmp_path / "new" / "b.json")])
    assert result.exit_code == 2 and "--full-depth" in result.output
    missing = CliRunner().invoke(
        main, ["bench", str(tmp_path / "absent.yaml"), "--json", str(tmp_path / "n2" / "b.json")]
    )
    assert missing.exit_code == 2
    assert not (tmp_path / "new").exists() and not (tmp_path / "n2").exists()


def test_unwritable_outputs_and_a_profile_without_training_fail_before_measuring(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for option, name in (("--json", "out.json"), ("--profile", "out.txt")):
        result = CliRunner().invoke(main, ["bench", str(TINY), "--small", option, str(blocker / name)])
        assert result.exit_code == 2 and option in result.output and "bench:" not in result.output, result.output
    result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--only", "aligner", "--profile", "p.txt"])
    assert result.exit_code == 2 and "--only training" in result.output
    for peak in ("nan", "inf"):
        result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--peak-tflops", peak])
        assert result.exit_code == 2 and "--peak-tflops" in result.output and "bench:" not in result.output


def test_results_replace_only_earlier_results_never_the_recipe_or_other_files(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.json"  # a recipe that happens to be named .json, or any file of someone's
    recipe.write_text('{"recipe": "mine"}')
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for option, target in (("--json", recipe), ("--profile", notes), ("--profile", TINY)):
        result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--only", "training", option, str(target)])
        assert result.exit_code == 2 and "is not an earlier `recipe bench" in result.output, result.output
        assert "bench:" not in result.output
    assert recipe.read_text() == '{"recipe": "mine"}' and notes.read_text() == "mine"
    result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--json", str(TINY)])
    assert result.exit_code == 2 and "name a .json file" in result.output
    earlier = tmp_path / "bench.json"
    for _ in range(2):  # the second run replaces the first one's report
        report = _bench(tmp_path, TINY, "--only", "aligner")
    assert report["aligner"]["prompts_per_s"] > 0 and json.loads(earlier.read_text())["recipe"] == "t5_to_qwen_tiny"


def test_a_json_target_on_a_file_system_that_takes_no_files_fails_before_measuring(tmp_path: Path) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where even root cannot create a file")
    result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--only", "aligner", "--json", "/proc/b.json"])
    assert result.exit_code == 2 and "/proc/b.json cannot be written" in result.output
    assert "aligner" not in result.stdout.lower(), "nothing was measured"


@pytest.mark.parametrize("steps", [1, 2])
def test_fewer_timed_steps_than_timed_updates(tmp_path: Path, steps: int) -> None:
    figures = _bench(tmp_path, TINY, "--only", "training", "--steps", str(steps))
    assert figures["training"]["timed_steps"] == steps


def test_aligner_falls_back_to_shipped_tokenizers_offline() -> None:
    result = run_aligner(load_recipe(REAL).recipe, BenchSpec(small=True))
    assert result.tokenizers.startswith("shipped") and result.prompts_per_s > 0


def _bench_in_a_process_of_its_own(scratch: Path, *args: str) -> dict:
    """As the CLI runs, with the recipe's 4 loader workers and `scratch` as TMPDIR, to see what the bench leaves
    there. `scratch` must be short: a worker's socket goes below it (see recipe_runner/trainer/loader_workers.py)."""
    import os
    import subprocess
    import sys

    out = scratch / "bench.json"
    command = [sys.executable, "-m", "recipe_runner.cli", "bench", *args, "--small", "--json", str(out)]
    env = {**os.environ, "TMPDIR": str(scratch / "tmp")}  # not the shared temp dir: a test beside may bench too
    (scratch / "tmp").mkdir()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder with a short path: pytest's tmp_path under xdist is too long to hold a worker's socket."""
    with tempfile.TemporaryDirectory(prefix="rb-") as folder:
        yield Path(folder)


def test_the_loader_alone_reads_the_recipe_width_from_a_cache_it_writes_and_removes(scratch: Path) -> None:
    loader = _bench_in_a_process_of_its_own(scratch, str(REAL), "--only", "loader")["loader"]
    assert loader["teacher_width"] == 4096 // 16 and loader["headroom"] is None
    assert loader["cache_dtype"] == "bfloat16" and loader["num_workers"] == 4
    assert not list((scratch / "tmp").iterdir())


def test_without_a_teacher_cache_the_loader_reads_no_rows(scratch: Path) -> None:
    args = (str(REAL), "--only", "loader", "--set", "teacher.cache=null")
    loader = _bench_in_a_process_of_its_own(scratch, *args)["loader"]
    assert loader["cache_dtype"] is None and loader["teacher_target_bytes_per_s"] == 0
    assert loader["real_student_tokens_per_s"] > 0


def test_a_logits_recipe_is_benched_by_its_training_step_with_teacher_and_lm_heads_counted(tmp_path: Path) -> None:
    one_micro_batch = ("--steps", "1", "--set", "hardware.grad_accum=1")  # the parts counted, not the speed
    report = _bench(tmp_path, REPO / "recipes" / "qwen_7b_to_1_5b.yaml", *one_micro_batch)
    training = report["training"]
    assert training["real_tokens_per_s"] > 0 and training["model_flops_per_step"] > 0
    parts = {part["name"]: part for part in training["flop_parts"]}
    assert parts["student"]["role"] == "trained" and parts["teacher (online)"]["role"] == "frozen_forward"
    shrunk = random_weights_recipe(load_recipe(REPO / "recipes" / "qwen_7b_to_1_5b.yaml").recipe, small=True)[0]
    student = shrunk.student.config
    # Qwen2.5-1.5B ties its LM head to the token embedding: its matmul is counted all the same.
    assert parts["student"]["dense_params"] > student["vocab_size"] * student["hidden_size"]
    assert training["teacher_targets"] == "online teacher forward on the same tokens"
    assert "teacher" not in report or report["teacher"] is None
    result = CliRunner().invoke(main, ["bench", str(REPO / "recipes" / "qwen_7b_to_1_5b.yaml"), "--only", "teacher"])
    assert result.exit_code == 2 and "a logits recipe is measured by its training step" in result.output


def test_a_cross_vocabulary_recipe_is_benched_with_each_side_on_its_own_ids(tmp_path: Path) -> None:
    cross = REPO / "recipes" / "examples" / "qwen_cross_vocab_tiny.yaml"
    losses = "stages.0.losses=[{type: uld}, {type: jsd}, {type: cross_entropy, weight: 0.1}]"
    report = _bench(tmp_path, cross, "--steps", "2", "--set", losses)
    training = report["training"]
    assert training["teacher_targets"].startswith("online teacher forward on its own tokens")
    assert training["phase_time_s"]["teacher"] > 0 and training["phase_time_s"]["loss"] > 0
    assert 0 < training["last_loss"] < 100
    parts = {part["name"]: part for part in training["flop_parts"]}
    assert parts["teacher (online)"]["dense_params"] > 0 and parts["student"]["role"] == "trained"
    assert any("4 of 5 aligned by position" in note for note in report["notes"])


def test_the_bench_names_the_stage_it_times_and_the_sampling_it_leaves_out(tmp_path: Path) -> None:
    """GKD recipes train on text first: the bench times that stage and says the later one is not timed."""
    gkd = REPO / "recipes" / "examples" / "qwen_cross_vocab_gkd_tiny.yaml"
    report = _bench(tmp_path, gkd, "--steps", "2")
    training = report["training"]
    assert training["stage"] == "off_policy" and training["later_stages"] == ["on_policy"]
    assert training["teacher_targets"].endswith("; on_policy sampling (stage 'on_policy') is not timed")
    shown = CliRunner().invoke(main, ["bench", str(gkd), "--small", "--steps", "1"])
    assert shown.exit_code == 0 and "'off_policy' (the first; not timed: 'on_policy')" in shown.output


def test_the_largest_batch_is_warmed_up_with_so_the_timed_ones_are_a_plain_draw() -> None:
    """Timed with the largest batch forced in, tokens/s read about 1.6x the distribution's mean step (audit)."""
    from recipe_runner.bench.lengths import batches_over_epochs
    from recipe_runner.bench.training import batch_indices

    hw = load_recipe(REAL).recipe.hardware
    capped = [min(n, 512) for n in load_lengths()]
    drawn = batches_over_epochs(capped, hw, 6)[:6]
    chosen = batch_indices(capped, hw, 6, first_timed=2)
    largest = max(batches_over_epochs(capped, hw, 6), key=lambda batch: len(batch) * max(capped[i] for i in batch))
    assert chosen[0] == largest and chosen[2:] == drawn[2:]
    assert batch_indices(capped, hw, 6, first_timed=0)[0] == largest  # no warm-up: among the timed, as before


def test_json_and_profile_may_not_name_one_file(tmp_path: Path) -> None:
    both = str(tmp_path / "both.json")
    result = CliRunner().invoke(main, ["bench", str(TINY), "--small", "--json", both, "--profile", both])
    assert result.exit_code == 2 and "--json and --profile both name" in result.output
