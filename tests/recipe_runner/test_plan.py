"""`recipe plan` works offline for the reference recipe and accounts LoRA, caching and budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

import recipe_runner.plan as plan_module
from recipe_runner.loader import load_recipe
from recipe_runner.memory import GIB
from recipe_runner.plan import build_plan, format_plan
from recipe_runner.trainer.parts import cache_complete
from schemas import Recipe
from schemas.stages import LoRA

REFERENCE = Path(__file__).parents[2] / "recipes" / "t5_to_qwen.yaml"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _cache_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference recipe's cache as `recipe cache` leaves it (see the test of an unwritten one)."""
    monkeypatch.setattr(plan_module, "cache_complete", lambda recipe: True)


@pytest.fixture(scope="module")
def reference() -> Recipe:
    return load_recipe(REFERENCE, check=False).recipe


def with_stage(recipe: Recipe, **changes: object) -> Recipe:
    return recipe.model_copy(update={"stages": [recipe.stages[0].model_copy(update=changes)]})


def memory_items(plan) -> dict[str, float]:
    return {item.label: item.bytes / GIB for item in plan.stages[0].memory.items}


def test_reference_recipe_plan(reference: Recipe) -> None:
    plan = build_plan(reference)
    assert plan.teacher.params == pytest.approx(4.76e9, rel=0.02)
    assert plan.student.params == pytest.approx(0.60e9, rel=0.02)
    assert plan.bolt_on.params == 410_213_376
    assert (plan.teacher.width, plan.student.width, plan.bolt_on.width) == (4096, 1024, 4096)
    assert plan.stages[0].trainable == {"student": plan.student.params, "bolt_on": plan.bolt_on.params}
    items = memory_items(plan)
    assert "teacher weights (frozen)" not in items  # teacher.cache is set: targets come from disk
    assert items["trainable: fp32 weights + grads + AdamW states (16 B/param)"] == pytest.approx(15.0, abs=0.1)
    assert 16 < plan.peak.memory.total_gib < 24 and plan.warnings == ()
    text = format_plan(plan)
    for expected in ("4.76B", "595.8M", "410.2M", "1024 -> 4096", "transformer   3072  3072", "peak memory"):
        assert expected in text
    assert "warning" not in text


def test_lora_stage_trains_adapters_and_keeps_frozen_student_weights(reference: Recipe) -> None:
    lora = LoRA(r=8)
    plan = build_plan(with_stage(reference, student_lora=lora))
    per_layer = 8 * ((1024 + 2048) + (1024 + 1024) * 2 + (2048 + 1024))  # q, k, v, o of one Qwen3 layer
    assert plan.stages[0].trainable["student"] == 28 * per_layer
    assert plan.stages[0].lora
    # Only LoRA trains it: its weights stay in student.dtype (no fp32 masters of weights that never change).
    assert memory_items(plan)["student weights (frozen, bfloat16)"] == pytest.approx(595_776_512 * 2 / GIB)
    assert "(LoRA)" in format_plan(plan)


def test_layers_past_the_student_layer_are_not_counted_as_trained(reference: Recipe) -> None:
    """They get no gradient (the 28th layer and the final norm of a student read at -2)."""
    read_early = reference.model_copy(update={"student": reference.student.model_copy(update={"layer": -2})})
    full = build_plan(reference).stages[0].trainable["student"]
    plan = build_plan(read_early)
    last_layer = (full - 1024 - 151_669 * 1024) // 28  # every layer alike: all but the embedding and final norm
    assert plan.stages[0].trainable["student"] == full - last_layer - 1024
    lora = build_plan(with_stage(read_early, student_lora=LoRA(r=8))).stages[0].trainable["student"]
    assert lora == 27 * 8 * ((1024 + 2048) + (1024 + 1024) * 2 + (2048 + 1024))


def test_a_frozen_student_counts_in_the_dtype_training_holds_it_in(reference: Recipe) -> None:
    bolt_on_first = reference.stages[0].model_copy(update={"name": "bolt_on_only", "trainable": ["bolt_on"]})
    two_stages = reference.model_copy(update={"stages": [bolt_on_first, reference.stages[0]]})
    assert memory_items(build_plan(two_stages))["student weights (frozen, float32)"] == pytest.approx(
        595_776_512 * 4 / GIB
    )
    never_trained = with_stage(reference, trainable=["bolt_on"])
    assert memory_items(build_plan(never_trained))["student weights (frozen, bfloat16)"] == pytest.approx(
        595_776_512 * 2 / GIB
    )


def test_lora_targets_that_match_nothing_warn(reference: Recipe) -> None:
    plan = build_plan(with_stage(reference, student_lora=LoRA(target_modules=["query", "v_proj"])))
    assert any("'query' matches no module" in warning for warning in plan.warnings)


def test_a_cpu_run_plans_no_cuda_runtime(reference: Recipe) -> None:
    label = "runtime (CUDA context, workspace)"
    assert label in memory_items(build_plan(reference))
    on_cpu = reference.model_copy(update={"hardware": reference.hardware.model_copy(update={"device": "cpu"})})
    assert label not in memory_items(build_plan(on_cpu))


def test_online_teacher_and_small_budget_warn(reference: Recipe) -> None:
    teacher = reference.teacher.model_copy(update={"cache": None})
    hardware = reference.hardware.model_copy(update={"vram_gb": 16.0, "gradient_checkpointing": False})
    plan = build_plan(reference.model_copy(update={"teacher": teacher, "hardware": hardware}))
    assert memory_items(plan)["teacher weights (frozen)"] == pytest.approx(4_762_310_656 * 2 / GIB)
    assert plan.peak.memory.over_budget
    (warning,) = plan.warnings
    assert "exceeds hardware.vram_gb 16 GiB" in warning and "gradient_checkpointing" in warning
    assert f"warning: {warning}" in format_plan(plan)


def test_bolt_on_only_stage_freezes_the_student(reference: Recipe) -> None:
    plan = build_plan(with_stage(reference, trainable=["bolt_on"]))
    assert plan.stages[0].trainable == {"bolt_on": plan.bolt_on.params}
    assert "student activations (no grad, one layer)" in memory_items(plan)
    assert "frozen" in format_plan(plan)


def test_bf16_stochastic_weights_halve_the_trainable_state(reference: Recipe) -> None:
    lowmem = reference.model_copy(
        update={"hardware": reference.hardware.model_copy(update={"trained_weights": "bf16_stochastic"})}
    )
    full, half = build_plan(reference).stages[0], build_plan(lowmem).stages[0]
    trainable = sum(full.trainable.values())
    label = "trainable: bf16 weights + grads + AdamW states (8 B/param)"
    assert memory_items(build_plan(lowmem))[label] == pytest.approx(8 * trainable / GIB)
    # bf16 weights also keep the student's residual stream (its checkpointed layer inputs) in bf16, not fp32.
    full_acts = memory_items(build_plan(reference))["student activations (checkpointed)"]
    half_acts = memory_items(build_plan(lowmem))["student activations (checkpointed)"]
    assert half_acts < full_acts
    assert full.memory.total_bytes - half.memory.total_bytes == pytest.approx(
        8 * trainable + (full_acts - half_acts) * GIB
    )


def test_checkpoint_threshold_counts_the_largest_unrecomputed_batch(reference: Recipe) -> None:
    def with_threshold(tokens: int | None) -> Recipe:
        hardware = reference.hardware.model_copy(update={"checkpoint_min_tokens": tokens})
        return reference.model_copy(update={"hardware": hardware})

    every = build_plan(with_threshold(None)).stages[0].memory.total_bytes
    small = build_plan(with_threshold(64)).stages[0].memory.total_bytes  # 63 tokens kept: under the checkpoints
    large = memory_items(build_plan(with_threshold(4096)))
    assert small == every
    assert large["student activations (batches under 4096 tokens, not recomputed)"] > 0
    assert "student activations (checkpointed)" not in large


def test_plan_suggests_the_largest_checkpoint_threshold_that_fits(reference: Recipe) -> None:
    plan = build_plan(reference)  # 24 GiB budget: checkpointing is needed, but not for every batch
    (hint,) = plan.hints
    threshold = int(hint.split("checkpoint_min_tokens: ")[1].split()[0])
    assert threshold % 256 == 0 and 256 <= threshold < 16 * 512
    assert f"hint: {hint}" in format_plan(plan)

    def total(tokens: int) -> float:
        hardware = reference.hardware.model_copy(update={"checkpoint_min_tokens": tokens})
        return build_plan(reference.model_copy(update={"hardware": hardware})).stages[0].memory.total_gib

    assert total(threshold) <= 24 < total(threshold + 256)  # the largest multiple of 256 that fits


def test_plan_says_when_checkpointing_is_not_needed_and_stays_quiet_without_a_budget(reference: Recipe) -> None:
    roomy = reference.model_copy(update={"hardware": reference.hardware.model_copy(update={"vram_gb": 80.0})})
    (hint,) = build_plan(roomy).hints
    assert "without gradient_checkpointing" in hint and "within hardware.vram_gb 80" in hint
    unbudgeted = reference.model_copy(update={"hardware": reference.hardware.model_copy(update={"vram_gb": None})})
    assert build_plan(unbudgeted).hints == ()


def _with_batching(recipe: Recipe, **changes: object) -> Recipe:
    return recipe.model_copy(update={"hardware": recipe.hardware.model_copy(update=changes)})


def test_a_token_budget_bounds_the_planned_batch_whatever_the_prompt_cap(reference: Recipe) -> None:
    # 16 prompts at max_length 512 and a 8192-token budget over up to 256 prompts plan the same worst batch.
    by_prompts = memory_items(build_plan(_with_batching(reference, batch_size=16)))
    by_tokens = memory_items(build_plan(_with_batching(reference, batch_size=256, batch_tokens=8192)))
    assert by_tokens == pytest.approx(by_prompts)
    half = memory_items(build_plan(_with_batching(reference, batch_size=256, batch_tokens=4096)))
    assert half["loss buffers (fp32 output + grad)"] == pytest.approx(
        by_prompts["loss buffers (fp32 output + grad)"] / 2
    )
    assert half["student activations (checkpointed)"] < by_prompts["student activations (checkpointed)"]
    # The prompt cap still binds when it is the smaller bound.
    capped = memory_items(build_plan(_with_batching(reference, batch_size=4, batch_tokens=4096)))
    loss = "loss buffers (fp32 output + grad)"
    assert capped[loss] == pytest.approx(by_prompts[loss] / 4)  # 4 x 512 tokens, under the 4096 budget
    assert _with_batching(reference, batch_size=4, batch_tokens=8192).hardware.batch_token_bound(512) == 2048


def test_over_budget_advice_names_the_batching_knob_in_use(reference: Recipe) -> None:
    tight = _with_batching(reference, vram_gb=4.0, batch_size=256, batch_tokens=8192)
    assert "a smaller hardware.batch_tokens with grad_accum" in " ".join(build_plan(tight).warnings)
    assert "a smaller hardware.batch_size" in " ".join(build_plan(_with_batching(reference, vram_gb=4.0)).warnings)


def test_the_lowmem_example_plans_its_worst_batch_within_12_gib() -> None:
    lowmem = load_recipe(REFERENCE.parent / "examples" / "t5_to_qwen_lowmem.yaml", check=False).recipe
    memory = build_plan(lowmem).stages[0].memory
    assert memory.batch_tokens == lowmem.hardware.batch_tokens < 16 * 512
    assert not memory.over_budget and memory.total_gib <= 12.0


def test_one_checkpoint_hint_that_fits_every_stage(reference: Recipe) -> None:
    # A student-only stage has room for a larger threshold than the reference stage, but hardware is shared:
    # a hint per stage used to offer that larger one, which overflows the reference stage.
    student_only = reference.stages[0].model_copy(update={"name": "student_only", "trainable": ["student"]})
    two = reference.model_copy(update={"stages": [reference.stages[0], student_only]})
    (hint,) = build_plan(two).hints
    assert hint.startswith("every stage: hardware.checkpoint_min_tokens: ")
    threshold = int(hint.split("checkpoint_min_tokens: ")[1].split()[0])

    def peaks(tokens: int) -> list[float]:
        hardware = two.hardware.model_copy(update={"checkpoint_min_tokens": tokens})
        return [stage.memory.total_gib for stage in build_plan(two.model_copy(update={"hardware": hardware})).stages]

    assert max(peaks(threshold)) <= 24 < max(peaks(threshold + 256))
    alone = build_plan(reference.model_copy(update={"stages": [student_only]})).hints[0]
    assert int(alone.split("checkpoint_min_tokens: ")[1].split()[0]) > threshold  # what the old hint offered


def _hardware(recipe: Recipe, **changes: object) -> Recipe:
    return recipe.model_copy(update={"hardware": recipe.hardware.model_copy(update=changes)})


def test_the_plan_says_what_a_run_on_cuda_packs_and_compiles(reference: Recipe, monkeypatch) -> None:
    plan = build_plan(reference)
    assert plan.on_cuda == "packed sequences (flash-attention varlen); compiled student and bolt-on layers and loss"
    assert f"on CUDA: {plan.on_cuda}" in format_plan(plan)
    assert build_plan(_hardware(reference, device="cpu")).on_cuda is None
    fp32 = build_plan(_hardware(reference, precision="fp32", compile=False)).on_cuda
    assert fp32.startswith("padded batches (precision fp32: the packed kernel needs bf16 or fp16); eager")
    layers = list(reference.bolt_on.layers)
    layers[2] = layers[2].model_copy(update={"dropout": 0.1})
    dropout = reference.model_copy(update={"bolt_on": reference.bolt_on.model_copy(update={"layers": layers})})
    assert build_plan(dropout).on_cuda.startswith("padded batches, since bolt_on.layers[2] has attention dropout")
    monkeypatch.setattr("recipe_runner.trainer.packing.torch_has_varlen", lambda: False)
    assert "where torch has torch.nn.attention.varlen" in build_plan(reference).on_cuda


def test_each_family_plans_its_own_loss_memory_whatever_the_attention(reference: Recipe) -> None:
    """The embedding family's teacher targets are counted with eager attention too, and the logits family has
    none of them; across two vocabularies it also holds the rows gathered at aligned positions."""
    eager = reference.model_copy(update={"hardware": reference.hardware.model_copy(update={"attention": "eager"})})
    assert "teacher targets" in memory_items(build_plan(eager))
    examples = REFERENCE.parent / "examples"
    same = memory_items(build_plan(load_recipe(examples / "qwen_logits_tiny.yaml", check=False).recipe))
    cross = memory_items(build_plan(load_recipe(examples / "qwen_cross_vocab_tiny.yaml", check=False).recipe))
    for items in (same, cross):
        assert "teacher targets" not in items and "bolt-on activations" not in items
    assert "logits at aligned positions (copies of both sides)" in set(cross) - set(same)


def test_a_cache_not_written_yet_is_planned_with_the_teacher_held(reference: Recipe, monkeypatch, tmp_path) -> None:
    """Until `recipe cache` has written it, `recipe run` holds the teacher: the plan says what that peak is."""
    from recipe_runner.teacher_cache import build_teacher_cache

    monkeypatch.setattr(plan_module, "cache_complete", cache_complete)
    unwritten = reference.model_copy(
        update={"teacher": reference.teacher.model_copy(update={"cache": reference.teacher.cache.model_copy(
            update={"dir": str(tmp_path / "none")})})}
    )  # fmt: skip
    plan = build_plan(unwritten)
    (warning,) = [w for w in plan.warnings if "holds no complete cache yet" in w]
    live = float(warning.split("training, ")[1].split(" GiB")[0])
    assert live > plan.peak.memory.total_gib + 8  # T5-XXL's bf16 weights, at least
    assert "of hardware.vram_gb 24" in warning and "`recipe cache RECIPE`" in warning
    roomy = unwritten.model_copy(update={"hardware": unwritten.hardware.model_copy(update={"vram_gb": 80.0})})
    assert any("holds no complete cache yet" in hint for hint in build_plan(roomy).hints)

    tiny = load_recipe(
        REFERENCE.parent / "examples" / "t5_to_qwen_tiny.yaml",
        [f"teacher.cache.dir={tmp_path / 'cache'}", f"output.dir={tmp_path / 'run'}", "data.train.limit=6"],
    ).recipe
    assert any("holds no complete cache yet" in hint for hint in build_plan(tiny).hints)
    build_teacher_cache(tiny, progress=False)
    written = build_plan(tiny)
    assert not any("complete cache" in line for line in (*written.hints, *written.warnings))


def test_answers_not_yet_written_are_planned_with_the_teacher_that_writes_them(tmp_path: Path) -> None:
    """Training a sequence-KD recipe never holds the teacher, but its run first loads it to write the answers."""
    recipe = Path(__file__).parents[2] / "recipes" / "examples" / "qwen_sequence_kd_tiny.yaml"
    answers = f"teacher.answers.dir={tmp_path / 'answers'}"
    plan = build_plan(load_recipe(recipe, [answers]).recipe)
    [hint] = [hint for hint in plan.hints if "teacher.answers.dir" in hint]
    assert hint.startswith(f"teacher.answers.dir {tmp_path / 'answers'} holds no answers for train and eval yet")
    assert "`recipe cache RECIPE` writes them beforehand" in hint
    assert hint.endswith("the figures above are for training, which does not hold the teacher")
    kl = "stages.0.losses=[{type: cross_entropy}, {type: forward_kl}]"  # (across two tokenizers: not checked here)
    with_kl = build_plan(load_recipe(recipe, [answers, kl], check=False).recipe)
    [hint] = [hint for hint in with_kl.hints if "teacher.answers.dir" in hint]
    assert hint.endswith("the figures above are for training, which holds the teacher too")
    big_teacher = (
        "teacher.config={model_type: qwen2, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32, "
        "num_key_value_heads: 8, intermediate_size: 14336, vocab_size: 2000, max_position_embeddings: 512}"
    )
    over = build_plan(load_recipe(recipe, [answers, big_teacher, "hardware.vram_gb=4"]).recipe)
    [warning] = [warning for warning in over.warnings if "teacher.answers.dir" in warning]
    assert "GiB of weights, and its generation cache, against hardware.vram_gb 4)" in warning


def test_a_ddp_plan_says_its_memory_is_per_process_and_what_a_step_takes_from_each(reference: Recipe) -> None:
    hardware = reference.hardware.model_copy(update={"distributed": "ddp", "batch_size": 8, "grad_accum": 2})
    text = format_plan(build_plan(reference.model_copy(update={"hardware": hardware})))
    assert "hint: hardware.distributed is ddp: the memory above is that of each process" in text
    assert "an optimizer step takes 8 prompts x 2 micro-batches from each process, N times that" in text
    assert "distributed is ddp" not in format_plan(build_plan(reference))


def test_a_stage_counts_only_the_projections_its_own_losses_use() -> None:
    features = load_recipe(Path(__file__).parents[2] / "recipes" / "examples" / "qwen_features_tiny.yaml").recipe
    first = features.stages[0]
    logits_only = first.model_copy(update={"name": "logits_only", "losses": [first.losses[0]]})
    one_pair = first.model_copy(update={"name": "one_pair", "losses": [first.losses[1].model_copy(
        update={"layers": {1: 2}})]})  # fmt: skip
    plan = build_plan(features.model_copy(update={"stages": [first, logits_only, one_pair]}))
    student = plan.student.params
    both, none, one = (stage.trainable["student"] for stage in plan.stages)
    assert none == student and both - student == 2 * (one - student) > 0  # two projections, none, one
