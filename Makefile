VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= .djepa

.PHONY: setup demo test test-fast lint typecheck docs format clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -e ".[dev,demo]"
	touch $@

# Train the default tokenizer (once), the default image model, and sample every digit.
demo: setup
	@test -f $(HOME_DIR)/tokenizers/image/config.json || $(BIN)/train_tokenizer modality=image
	$(BIN)/train modality=image
	$(BIN)/sample modality=image num_samples=10 out=runs/image/samples

test: setup
	$(BIN)/pytest

# The inner loop: everything but the tests that train a model or run a command end to end (marked `slow`).
test-fast: setup
	$(BIN)/pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on every installed package (djepa/, modalities/, tokenizers/, benchmarks/); pyproject.toml's [tool.mypy].
typecheck: setup
	@for p in modalities tokenizers benchmarks configs; do test -e djepa/$$p || ln -s ../$$p djepa/$$p; done
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link or a page outside nav fails.
docs: setup
	$(BIN)/mkdocs build --strict

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs $(HOME_DIR)
