# Every target with a `##` comment is listed by `make help`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.DEFAULT_GOAL := help
# pip installs without byte-compiling (about 35 s less on a fresh venv) and Python writes each module's .pyc the
# first time it is imported, once: a PYTHONDONTWRITEBYTECODE inherited from the machine would make every process
# (each Ray worker) compile torch, Ray and MLflow again, so make's commands run with it cleared.
export PYTHONDONTWRITEBYTECODE :=
CONFIG ?= pipelines/configs/train.yaml
CLUSTER_CONFIG ?= pipelines/configs/train-cluster.yaml
ARGS ?=
MLFLOW_PORT ?= 5000
MLFLOW_HOST ?= 127.0.0.1
# MLflow servers without MLflow's job runner (huey consumers for its GenAI jobs: 8 processes, ~1.4 GB) unless the
# environment sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION: nothing here uses it
NO_JOB_RUNNER := MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
THYROID := data/thyroid/train.parquet
DIGITS := data/digits/train.parquet

SCORE_CONFIG ?= pipelines/configs/score.yaml
SERVE_CONFIG ?= pipelines/configs/serve.yaml
TUNE_CONFIG ?= pipelines/configs/tune.yaml
TUNE_CLUSTER_CONFIG ?= pipelines/configs/tune-cluster.yaml
EVALUATE_CONFIG ?= pipelines/configs/evaluate.yaml
GENERATE_CONFIG ?= pipelines/configs/generate.yaml
IMPUTE_CONFIG ?= pipelines/configs/impute.yaml
PROMOTE ?=
RAY_VERSION := 2.60.0
IMAGE ?= vae-anomaly:ray$(RAY_VERSION)-py311-gpu
PUSH ?=

.PHONY: help install test demo lint bench clean train train-cluster tune tune-cluster score scores score-cluster score-cluster-submit soak serve evaluate generate impute mlflow-ui data image

help: ## List every target with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --no-compile --upgrade pip
	$(PY) -m pip install -qq --no-compile $(TORCH_PIN)
	$(PY) -m pip install -qq --no-compile -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install torch (CPU wheel) and the project with its dev extra

test: $(STAMP) ## Run the test suite (unit + integration)
	$(PY) -m pytest

demo: $(STAMP) ## Whole pipeline on the bundled thyroid data: Parquet -> Ray Train -> MLflow registry -> scores + AUROC
	$(PY) -m pipelines demo

$(THYROID): $(STAMP)
	$(PY) -m pipelines prepare-data --output data/thyroid

$(DIGITS): $(STAMP)
	$(PY) -m pipelines prepare-data --dataset digits --output data/digits

data: $(THYROID) $(DIGITS) ## Write the bundled thyroid data and scikit-learn's digits images as Parquet under data/

train: $(THYROID) $(DIGITS) ## Train with Ray Train on a local Ray (CONFIG=..., ARGS="key.sub=value ..."), register in MLflow
	$(PY) -m pipelines train --config $(CONFIG) $(ARGS)

tune: $(THYROID) ## Ray Tune sweep of beta x latent size on a local Ray (TUNE_CONFIG=..., ARGS=...); registers the best
	$(PY) -m pipelines tune --config $(TUNE_CONFIG) $(ARGS)

# `ray job submit` of a pipeline command to the cluster at RAY_ADDRESS, with this directory as working dir.
define check_cluster_env
	@test -n "$(RAY_ADDRESS)" || { echo "$@: set RAY_ADDRESS=http://<head>:8265" >&2; exit 2; }
	@test -n "$(MLFLOW_TRACKING_URI)" || { echo "$@: set MLFLOW_TRACKING_URI to a server the cluster reaches" >&2; exit 2; }
endef

# $(1): the command and its arguments; $(2): more `ray job submit` options
define submit
	$(VENV)/bin/ray job submit --address "$(RAY_ADDRESS)" --working-dir . $(2) \
	  --runtime-env-json '{"excludes": [".venv", ".git", "mlruns", "runs", "outputs", "data"], "env_vars": {"MLFLOW_TRACKING_URI": "$(MLFLOW_TRACKING_URI)"$(if $(VAE_CATALOG_URI),$(comma) "VAE_CATALOG_URI": "$(VAE_CATALOG_URI)")}}' \
	  -- python -m pipelines $(1) $(ARGS)
endef
comma := ,

train-cluster: $(STAMP) ## Submit training to the Ray cluster at RAY_ADDRESS with `ray job submit` (needs MLFLOW_TRACKING_URI)
	$(check_cluster_env)
	$(call submit,train --config $(CLUSTER_CONFIG))

tune-cluster: $(STAMP) ## Submit a Ray Tune sweep to the Ray cluster at RAY_ADDRESS (needs MLFLOW_TRACKING_URI)
	$(check_cluster_env)
	$(call submit,tune --config $(TUNE_CLUSTER_CONFIG))

score: $(THYROID) $(DIGITS) ## Score Parquet rows with a registered model into the scores table (ARGS="input=... model=NAME@ALIAS")
	$(PY) -m pipelines score --config $(SCORE_CONFIG) $(ARGS)

scores: $(STAMP) ## Print what the scoring job published for a run date (ARGS="--run-date YYYY-MM-DD --top 5")
	$(PY) -m pipelines scores --config $(SCORE_CONFIG) $(ARGS)

# The logical date a scheduled run scores: RUN_DATE as the schedule passes it, else yesterday (UTC).
SCORE_DATE = $(or $(RUN_DATE),$(shell date -u -d yesterday +%F))
SCORE_JOB = score-$(SCORE_DATE)

score-cluster: $(STAMP) ## Submit scoring for RUN_DATE (default yesterday, UTC) as Ray job score-<date>; a retry re-attaches
	$(check_cluster_env)
	@if $(VENV)/bin/ray job status --address "$(RAY_ADDRESS)" $(SCORE_JOB) >/dev/null 2>&1; then \
	  echo "$(SCORE_JOB) was already submitted: following it"; \
	  $(VENV)/bin/ray job logs --follow --address "$(RAY_ADDRESS)" $(SCORE_JOB); \
	  $(VENV)/bin/ray job status --address "$(RAY_ADDRESS)" $(SCORE_JOB) 2>&1 | grep -q "Job '$(SCORE_JOB)' succeeded"; \
	else $(MAKE) --no-print-directory score-cluster-submit RUN_DATE=$(SCORE_DATE); fi

score-cluster-submit:
	$(call submit,score --config $(SCORE_CONFIG) run_date=$(SCORE_DATE),--submission-id $(SCORE_JOB))

serve: $(STAMP) ## Online scoring on Ray Serve: POST /score, GET /healthz (ARGS="--model NAME@ALIAS --port 8000")
	$(PY) -m pipelines serve --config $(SERVE_CONFIG) $(ARGS)

evaluate: $(THYROID) ## Challenger vs champion vs baselines on labelled rows, logged to MLflow (PROMOTE=1: apply the gate)
	$(PY) -m pipelines evaluate --config $(EVALUATE_CONFIG) $(if $(PROMOTE),--promote) $(ARGS)

generate: $(STAMP) ## Synthetic rows from a registered model into one Parquet file (ARGS="model=NAME@ALIAS n=1000")
	$(PY) -m pipelines generate --config $(GENERATE_CONFIG) $(ARGS)

impute: $(THYROID) ## Fill missing values of Parquet rows with a registered model (ARGS="input=... output=... model=...")
	$(PY) -m pipelines impute --config $(IMPUTE_CONFIG) $(ARGS)

mlflow-ui: $(STAMP) ## Browse the local MLflow store (mlruns/) at http://127.0.0.1:5000 (MLFLOW_PORT=...)
	$(NO_JOB_RUNNER) $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port $(MLFLOW_PORT)

image: ## Build the cluster image from infra/docker/Dockerfile where a Docker engine runs (IMAGE=..., PUSH=1 to push)
	@docker info > /dev/null 2>&1 || { echo "image: no Docker engine reachable (docker info failed); build where one runs" >&2; exit 2; }
	docker build -f infra/docker/Dockerfile -t $(IMAGE) .
	$(if $(filter 1,$(PUSH)),docker push $(IMAGE))

mlflow-server: $(STAMP) ## MLflow server on PostgreSQL + S3 (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION; MLFLOW_HOST/PORT)
	@test -n "$$MLFLOW_BACKEND_STORE_URI" || { echo "$@: set MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST:5432/DB" >&2; exit 2; }
	@test -n "$$MLFLOW_ARTIFACTS_DESTINATION" || { echo "$@: set MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/PREFIX" >&2; exit 2; }
	$(VENV)/bin/mlflow db upgrade "$$MLFLOW_BACKEND_STORE_URI"
	$(NO_JOB_RUNNER) exec $(VENV)/bin/mlflow server --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) --workers 2 \
	  --artifacts-destination "$$MLFLOW_ARTIFACTS_DESTINATION"

lint: $(STAMP) ## Check style with ruff
	$(PY) -m ruff check vae pipelines bench tests
	$(PY) -m ruff format --check vae pipelines bench tests

bench: $(STAMP) ## Benchmark tables -> bench/RESULTS.md (not in `make test`; BENCH_QUICK=1: tiny, no file; BENCH_ARGS=...)
	$(PY) -m bench $(if $(filter 1,$(BENCH_QUICK)),--quick,--results bench/RESULTS.md) $(BENCH_ARGS)

soak: $(STAMP) ## Kill the scoring job 10 times at each commit step; prints partial reads and rows lost/duplicated (not in `make test`)
	$(PY) -m bench.soak $(SOAK_ARGS)

clean: ## Remove the virtual environment, caches and generated data (keeps mlruns/ and runs/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info data outputs
