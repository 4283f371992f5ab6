# One-command entry points for a fresh machine (Python 3.10+; CPU is enough for the tiny recipe).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PROMPT ?= a red fox in snow

.PHONY: setup demo test lint clean-demo bench-gpu gpu-check

$(BIN)/recipe: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/recipe

setup: $(BIN)/recipe

## Train the tiny default recipe on the CPU, then render the same prompt with both encoders.
demo: setup
	$(BIN)/recipe run recipes/examples/t5_to_qwen_tiny.yaml --resume
	$(BIN)/recipe infer recipes/examples/t5_to_qwen_tiny.yaml --prompt "$(PROMPT)" --encoder qwen --out fox.png
	$(BIN)/recipe infer recipes/examples/t5_to_qwen_tiny.yaml --prompt "$(PROMPT)" --compare --out fox_compare.png
	@echo "wrote fox.png and fox_compare.png"

## Lint and run the whole test suite (end-to-end tests included).
test: setup
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n auto --dist worksteal --durations=15

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## On a GPU machine: README's benchmark tables and the A/B runs of each speed setting, one JSON each.
BENCH_OUT ?= bench-results
BENCH = $(BIN)/recipe bench recipes/t5_to_qwen.yaml
TOKENS = $(BIN)/recipe bench recipes/examples/t5_to_qwen_token_batches.yaml --only training
THROUGHPUT = $(BIN)/recipe bench recipes/examples/t5_to_qwen_throughput.yaml --only training
bench-gpu: gpu-check
	mkdir -p $(BENCH_OUT)
	$(BENCH) --json $(BENCH_OUT)/reference.json
	$(BENCH) --only training --only teacher --set hardware.compile=false --json $(BENCH_OUT)/eager.json
	$(BENCH) --only training --steps 3 --set hardware.compile=false --profile $(BENCH_OUT)/eager-profile.txt \
		--json $(BENCH_OUT)/eager-profiled.json
	$(BENCH) --only training --only teacher --set hardware.fused_kernels=false --json $(BENCH_OUT)/unfused.json
	$(BENCH) --only training --set hardware.gradient_checkpointing=false --json $(BENCH_OUT)/no-checkpointing.json
	$(BENCH) --only training --set hardware.checkpoint_min_tokens=1792 --json $(BENCH_OUT)/checkpoint-1792.json
	$(BENCH) --only teacher --set teacher.cache.batch_tokens=32768 --json $(BENCH_OUT)/teacher-32k.json
	$(BIN)/recipe bench recipes/examples/t5_to_qwen_lowmem.yaml --only training --json $(BENCH_OUT)/lowmem.json
	$(BIN)/recipe bench recipes/examples/t5_to_qwen_lowmem.yaml --only training --set hardware.compile=false \
		--json $(BENCH_OUT)/lowmem-eager.json
	$(TOKENS) --json $(BENCH_OUT)/token-batches.json
	$(TOKENS) --set hardware.gradient_checkpointing=false --json $(BENCH_OUT)/token-batches-no-checkpointing.json
	$(TOKENS) --set hardware.gradient_checkpointing=false --set hardware.compile=false \
		--json $(BENCH_OUT)/token-batches-no-checkpointing-eager.json
	$(TOKENS) --set hardware.gradient_checkpointing=false --set hardware.batch_tokens=16384 \
		--set hardware.batch_size=512 --json $(BENCH_OUT)/token-batches-16k-no-checkpointing.json
	$(TOKENS) --set hardware.gradient_checkpointing=false --set hardware.batch_tokens=16384 \
		--set hardware.batch_size=512 --set hardware.packed_sequences=false \
		--json $(BENCH_OUT)/token-batches-16k-no-checkpointing-padded.json
	$(BENCH) --only training --set hardware.packed_sequences=false --json $(BENCH_OUT)/padded.json
	$(THROUGHPUT) --set hardware.trained_weights=bf16_stochastic --json $(BENCH_OUT)/throughput-bf16-stochastic.json
	$(THROUGHPUT) --set hardware.batch_tokens=24576 --json $(BENCH_OUT)/throughput-24k.json

## On a GPU machine, first: the tests that need CUDA, then the throughput recipe's step phase by phase with its
## data loader, and a profile of its step.
gpu-check: setup
	mkdir -p $(BENCH_OUT)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/components/test_packed_sequences.py tests/components/losses \
		tests/recipe_runner/trainer/test_packing.py
	$(BIN)/recipe bench recipes/qwen_7b_to_1_5b.yaml --json $(BENCH_OUT)/logits.json
	$(BIN)/recipe bench recipes/qwen_7b_to_1_5b.yaml --set hardware.packed_sequences=false \
		--json $(BENCH_OUT)/logits-padded.json
	$(BIN)/recipe bench recipes/llama_3b_to_tinyllama_cross_vocab.yaml --json $(BENCH_OUT)/cross-vocab.json
	$(THROUGHPUT) --only loader --json $(BENCH_OUT)/throughput-with-loader.json
	$(THROUGHPUT) --steps 3 --profile $(BENCH_OUT)/throughput-profile.txt --json $(BENCH_OUT)/throughput-profiled.json
