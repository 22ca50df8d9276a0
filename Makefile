VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?= .djepa

.PHONY: setup demo test lint format clean

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

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf runs $(HOME_DIR)
