# One-command entry points for a fresh machine (Python 3.10+; CPU is enough for the tiny recipe).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PROMPT ?= a red fox in snow

.PHONY: setup demo test lint clean-demo

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
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
