# Every target with a `##` comment is listed by `make help`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.DEFAULT_GOAL := help
.PHONY: help install test demo lint bench clean

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq $(TORCH_PIN)
	$(PY) -m pip install -qq -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch (CPU wheel) and the project with its dev extra

test: $(STAMP) ## Run the test suite (unit + integration)
	$(PY) -m pytest -m "not benchmark"

demo: $(STAMP) ## Train on the bundled thyroid data, print held-out AUROC and the top anomalies
	$(PY) -m pipelines demo

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check vae pipelines tests
	$(PY) -m ruff format --check vae pipelines tests

bench: $(STAMP) ## Run the benchmarks (not part of `make test`) and print their tables
	$(PY) -m pytest tests/benchmarks -m benchmark -s

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
