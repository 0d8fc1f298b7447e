# robustprune: `make run` and `make test` are all a newcomer needs (both set up what is missing first).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.robustprune-setup
REQ_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
PORT ?= 5000
PARAMS ?= params.yaml

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export NLTK_DATA := $(CURDIR)/nltk_data

.PHONY: help setup run run-lm run-paper run-evidence report-evidence test test-fast chaos mutation lint format ui repro bench clean push pull mlflow-server readme-table
help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  your own fine-tuned classifier (after make setup; docs/own-model.md):"
	@echo "    .venv/bin/robustprune prune MODEL_DIR --data FILE --method rakp --sparsity 0.875 --out DIR"
	@echo "    .venv/bin/robustprune attack|report|run ... --help"

$(STAMP)-$(REQ_HASH):
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first time: a few minutes)"
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(STAMP)-*; touch $@

setup: $(STAMP)-$(REQ_HASH)  ## create .venv, install pins, fetch the offline default resources (idempotent)
	@$(BIN)/python -m robustprune.resources fetch minilm rotten_tomatoes political_speeches glove50 wordnet vader afinn
	@test -d .dvc || $(BIN)/dvc init -q

run: setup  ## run the default pipeline (Prefect flow; DVC-cached stages skipped) and print the report
	$(BIN)/python -m flows.pipeline --params $(PARAMS)

run-lm: setup  ## the causal-LM track (params-lm.yaml): SmolLM2-135M perplexity, one-shot and SDS
	@$(BIN)/python -m robustprune.resources fetch smollm2
	$(BIN)/python -m flows.lm --params params-lm.yaml
	$(BIN)/dvc commit -q -f lm/dvc.yaml  # record the run in lm/dvc.lock, as `dvc repro lm/dvc.yaml` would

run-paper: setup  ## the `paper` profile (params-paper.yaml): every model attacked on 1000 examples (GPU worker)
	$(BIN)/python -m flows.pipeline --params params-paper.yaml

run-evidence: setup  ## the `evidence` profile (params-evidence.yaml, ~4 h): its own robust dense start, CAP-m as the reference, 500 attacked rows x 6 models + 100 x 4; report to reports/evidence/
	$(BIN)/python -m flows.pipeline --params params-evidence.yaml
	@mkdir -p reports/evidence/plots
	cp reports/summary.md reports/metrics.json reports/attack.json reports/eval.json reports/evidence/
	cp reports/prepare.json reports/finetune.json reports/soup.json reports/prune.json reports/sds.json reports/cap.json reports/evidence/
	cp reports/plots/accuracy_vs_sparsity.png reports/plots/attack_vs_sparsity.png reports/plots/transfer_vs_sparsity.png reports/plots/fidelity_vs_robustness.png reports/plots/robustness_frontier.png reports/evidence/plots/
	rm -rf reports/evidence/attacks && cp -r reports/attacks reports/evidence/attacks
	@echo "evidence report: reports/evidence/summary.md (reports/ now holds the evidence run; make run restores the default)"

report-evidence: $(STAMP)-$(REQ_HASH)  ## re-render reports/evidence/ with today's report code (no model loaded)
	$(BIN)/python -m flows.rerender_report reports/evidence

repro: setup  ## the same pipeline stage by stage through `dvc repro`
	$(BIN)/dvc repro

test: setup  ## run the whole test suite (unit + integration + reliability on tiny configs)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --no-loadscope-reorder

test-fast: setup  ## unit tests only
	$(BIN)/python -m pytest -q -m "not integration and not slow and not reliability"

chaos: setup  ## kill -9 at 20 random points and resume; time the bad-input corpus (benchmarks/results/)
	$(BIN)/python benchmarks/chaos.py && $(BIN)/python benchmarks/chaos.py --corpus

mutation: setup  ## mutation testing of the numerical core (mutmut; not in CI; GROUPS="stats verdicts" for some)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -r requirements-mutation.txt
	$(BIN)/python benchmarks/mutation.py $(if $(GROUPS),--groups $(GROUPS),)

lint: setup  ## ruff check + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup  ## ruff fix + format
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

ui: setup  ## MLflow UI over the project's sqlite store on http://127.0.0.1:$(PORT)
	@echo "MLflow UI, model-training view: http://127.0.0.1:$(PORT)/#/experiments?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns.db --host 127.0.0.1 --port $(PORT)

push: $(STAMP)-$(REQ_HASH)  ## push DVC-tracked data/models and the run cache to the default DVC remote
	$(BIN)/dvc push --run-cache

pull: $(STAMP)-$(REQ_HASH)  ## pull them (and the run cache) from the default DVC remote (docs/deployment.md)
	$(BIN)/dvc pull --run-cache

MLFLOW_DIR ?= $(CURDIR)/.mlflow-server
mlflow-server: $(STAMP)-$(REQ_HASH)  ## MLflow tracking server on http://127.0.0.1:$(PORT) (sqlite + proxied artifacts)
	@mkdir -p $(MLFLOW_DIR)/artifacts
	$(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(MLFLOW_DIR)/mlflow.db --artifacts-destination $(MLFLOW_DIR)/artifacts

readme-table: $(STAMP)-$(REQ_HASH)  ## rewrite README's results table from reports/metrics.json (after a run)
	$(BIN)/python -m robustprune.readme_table --write README.md

bench: setup  ## pruning-kernel micro-benchmark (prints a table, writes benchmarks/results/)
	$(BIN)/python benchmarks/bench_kernels.py

clean:  ## remove pipeline outputs and caches (keeps .venv and downloaded wheels)
	rm -rf data/prepared data/calibration data/lm models/base models/finetuned models/soup models/pruned models/sds models/cap models/attack models/lm reports/*.json reports/*.md reports/plots reports/attacks .cache/prune-work .cache/sds-work .cache/cap-work .cache/lm-work .cache/resources mlruns.db mlartifacts .prefect dvc.lock
