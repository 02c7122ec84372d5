# The front door. Every target installs what it needs first, so on a fresh clone
# `make benchmark` and `make test` are all there is to it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR ?= models
GPU_BENCH_DIR ?= $(MODEL_DIR)-gpu224
GPU_BUNDLE ?= gpu-bundle
# The GPU check compares on the held-out digits: its baseline is a digits build.
DIGITS_DIR ?= models-digits
TORCH ?= 2.11.0
RESULTS ?= results
# The benchmark's task: fashion (Fashion-MNIST, Debian's dataset-fashion-mnist); TASK=digits
# builds in minutes (what the test suite builds).
TASK ?= fashion
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
BENCH_ARGS ?=
PYTEST_ARGS ?=
IMAGE ?= kind.local/densenet-serving-cpu:0.1.0
# The CPU image's runtime: onnxruntime or openvino.
IMAGE_RUNTIME ?= onnxruntime
# The CPU runtimes `make protocols` and `make runtimes` measure side by side.
CPU_RUNTIMES ?= onnxruntime,openvino
# The container engine for images: podman where it is installed, else docker.
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
KIND_CLUSTER ?= kind
# The local stack (compose.yaml): docker compose, else podman compose.
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo docker compose || echo podman compose)
PROFILE ?=
NO_CACHE ?=
DETACH ?= 1

# The data a TASK needs: the fashion task's IDX files; digits ship with scikit-learn.
task_data = $(if $(filter fashion,$(TASK)),fashion-data,)
task_args = --task $(TASK)$(if $(filter fashion,$(TASK)), --data $(FASHION_DIR),)

.PHONY: help install fashion-data test test-fast lint typecheck format serve artifacts benchmark tensorboard loadtest batching protocols runtimes plan gpu-bundle gpu-check torch-compat image kind-load image-check stack stack-down tools docs lock clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# The venv is the lock, installed by hash (a wheel whose hash differs fails the install), then
# the project itself without dependencies: the tests run exactly what requirements/ pins.
$(STAMP): pyproject.toml requirements/dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --progress-bar off --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --progress-bar off --no-deps -e .
	touch $@

install: $(STAMP) ## create .venv from requirements/dev.txt: everything tests, builds and benchmarks need

# Locks with hashes for CPython 3.11 on x86-64 Linux (the images' platform), one per image and
# one for the dev/test environment, all pinned alike (each is resolved within dev.txt's pins).
# Existing pins are kept; LOCK_UPGRADE=1 moves them to the newest releases allowed.
UV := $(BIN)/uv
LOCK_FLAGS = --quiet --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  $(if $(LOCK_UPGRADE),--upgrade)
NVIDIA_INDEX ?= https://pypi.nvidia.com

lock: $(STAMP) ## regenerate requirements/*.txt (hashed) from pyproject.toml; LOCK_UPGRADE=1 moves pins
	$(UV) pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements/dev.txt
	$(UV) pip compile pyproject.toml --extra onnx $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/serve-onnxruntime.txt
	$(UV) pip compile pyproject.toml --extra openvino $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/serve-openvino.txt
	$(UV) pip compile pyproject.toml --extra torch $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/gpu-torch.txt
	for image in loadtest-image tensorboard-image sbom; do \
	  $(UV) pip compile requirements/$$image.in $(LOCK_FLAGS) -c requirements/dev.txt -o requirements/$$image.txt || exit 1; \
	done
	@$(UV) pip compile pyproject.toml --extra gpu $(LOCK_FLAGS) -c requirements/dev.txt \
	  --extra-index-url $(NVIDIA_INDEX) -o requirements/gpu.txt 2>/dev/null || \
	  echo "requirements/gpu.txt not made: TensorRT's wheels need $(NVIDIA_INDEX); Dockerfile.gpu then pins them by version"
	$(BIN)/python scripts/check_lock.py

# pytest exits 5 when it collected nothing: that fails here rather than passing.
run_pytest = $(BIN)/python -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# promtool and prometheus for the monitoring tests, from Debian's prometheus package when it
# can be installed here (root and apt-get); otherwise those tests skip and say why.
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; } || \
	    echo "could not install prometheus: its tests will skip"; \
	  else echo "promtool not found and not installable here: the Prometheus tests will skip"; fi; }

# Fashion-MNIST from Debian's dataset-fashion-mnist where it can be installed here (root and
# apt-get); otherwise a line saying what to do (make benchmark then stops at its first build).
fashion-data:
	@test -f $(FASHION_DIR)/t10k-labels-idx1-ubyte.gz || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends dataset-fashion-mnist >/dev/null 2>&1; } || \
	    echo "could not install dataset-fashion-mnist: install it, or set FASHION_DIR to the IDX files"; \
	  else echo "Fashion-MNIST not in $(FASHION_DIR): apt-get install dataset-fashion-mnist (as root), or set FASHION_DIR"; fi; }

test: lint typecheck tools fashion-data ## lint, type-check and run the whole test suite (what CI runs)
	$(call run_pytest,)

test-fast: $(STAMP) ## the unit tier: a fake engine, no model built, under a minute
	$(call run_pytest,tests/unit)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check service tests loadtest scripts
	$(BIN)/ruff format --check service tests loadtest scripts

format: $(STAMP) ## apply ruff's formatting and autofixes
	$(BIN)/ruff format service tests loadtest scripts
	$(BIN)/ruff check --fix service tests loadtest scripts

typecheck: $(STAMP) ## mypy on service/
	$(BIN)/mypy

serve: $(STAMP) $(task_data) ## serve MODEL_VARIANT on MODEL_RUNTIME from MODEL_DIR (builds it for TASK if missing)
	@test -f $(MODEL_DIR)/$${MODEL_VARIANT:-baseline}/manifest.json || \
	  $(BIN)/densenet build $${MODEL_VARIANT:-baseline} $(task_args) --out $(MODEL_DIR)
	MODEL_DIR=$(MODEL_DIR) $(BIN)/densenet serve

artifacts: $(STAMP) $(task_data) ## build every CPU variant (torch, ONNX Runtime, OpenVINO) for TASK into MODEL_DIR
	$(BIN)/densenet build $$($(BIN)/densenet list --cpu) $(task_args) --out $(MODEL_DIR) --skip-built

benchmark: artifacts ## measure every variant x runtime x batch size; writes $(RESULTS)/
	$(BIN)/densenet bench --model-dir $(MODEL_DIR) --out $(RESULTS) --readme README.md $(BENCH_ARGS)
	$(call publish,$(RESULTS)/REPORT.md,benchmark.md)

tensorboard: $(STAMP) ## serve $(RESULTS)/tensorboard on port 6006
	$(BIN)/tensorboard --logdir $(RESULTS)/tensorboard --port 6006 --bind_all

# A measured report, copied into docs/generated/ for the page that discusses it (its title
# becomes a bold line): the docs show the last run's table, not a retyped one.
publish = mkdir -p docs/generated && sed -e '1s/^\# \(.*\)$$/**\1**/' -e '/^!\[.*\](.*\.png)$$/d' \
  $(1) > docs/generated/$(2)

loadtest: artifacts ## local server + Locust sweep; summary under $(RESULTS)/loadtest
	$(BIN)/python loadtest/run.py --model-dir $(MODEL_DIR) --out $(RESULTS)/loadtest
	$(call publish,$(RESULTS)/loadtest/summary.md,loadtest.md)

batching: artifacts ## throughput at concurrency 8 with and without dynamic batching (CPU)
	$(BIN)/python loadtest/run.py --batching --model-dir $(MODEL_DIR) --out $(RESULTS)/loadtest

protocols: artifacts ## images/s: /predict (1 image/request) vs /v2 infer (8 images/request)
	$(BIN)/python loadtest/run.py --protocols --runtimes $(CPU_RUNTIMES) --concurrency 4 \
	  --model-dir $(MODEL_DIR) --out $(RESULTS)/loadtest
	$(call publish,$(RESULTS)/loadtest/protocols.md,protocols.md)

runtimes: artifacts ## the CPU pod on each CPU runtime: cold start, RSS, req/s at its containerConcurrency
	$(BIN)/python loadtest/run.py --compare-runtimes --runtimes $(CPU_RUNTIMES) \
	  --model-dir $(MODEL_DIR) --out $(RESULTS)/loadtest
	$(call publish,$(RESULTS)/loadtest/runtimes.md,runtimes.md)

# The capacity plan's SLO for the example traces (latency at the client, cold starts included).
PLAN_ARGS ?= --p95-ms 100 --p99-ms 500
PLAN_TRACES ?= steady diurnal bursty

plan: $(STAMP) ## Knative settings for loadtest/traces/*.csv from make loadtest + make benchmark
	@rc=0; for t in $(PLAN_TRACES); do \
	  $(BIN)/densenet plan --trace loadtest/traces/$$t.csv --loadtest $(RESULTS)/loadtest/summary.json \
	    --benchmark $(RESULTS)/benchmark_results.csv $(PLAN_ARGS) --out $(RESULTS)/plan/$$t || rc=$$?; \
	done; exit $$rc

gpu-bundle: $(STAMP) ## wheels + baseline weights + digits for scripts/gpu_check.sh on an offline GPU machine
	$(BIN)/densenet build baseline --task digits --out $(DIGITS_DIR) --skip-built
	$(BIN)/python -m service.bench.gpu_bundle $(GPU_BUNDLE) --model-dir $(DIGITS_DIR)

gpu-check: $(STAMP) ## on a CUDA machine with network: TensorRT builds, GPU tests, eager vs TensorRT
	$(BIN)/python -m pip install --quiet '.[gpu]'
	@test -f $(MODEL_DIR)/baseline/manifest.json || $(BIN)/densenet build baseline --out $(MODEL_DIR)
	$(BIN)/densenet build tensorrt --out $(MODEL_DIR)
	$(BIN)/python -m pytest -m gpu -v
	rm -rf $(GPU_BENCH_DIR) && mkdir -p $(GPU_BENCH_DIR) && cp -r $(MODEL_DIR)/baseline $(GPU_BENCH_DIR)/
	$(BIN)/densenet build tensorrt --out $(GPU_BENCH_DIR) --trt-image-size 224 \
	  --trt-batch-opt 64 --trt-batch-max 128
	$(BIN)/densenet bench --device cuda --model-dir $(GPU_BENCH_DIR) --out $(RESULTS)/gpu \
	  --batch-sizes 1 8 64 128 --repeats 2

torch-compat: ## the unit tier and the GPU check's CPU rehearsal under torch==$(TORCH) (.venv-torch-$(TORCH))
	bash scripts/torch_compat.sh $(TORCH)

# The image's SBOM (CycloneDX JSON of its /opt/venv, written in its build stage) lands here.
SBOM = $(RESULTS)/image/$(subst :,_,$(subst /,_,$(IMAGE))).cdx.json

image: artifacts ## build the CPU image from its lock (ENGINE: podman, else docker); its SBOM beside
	$(ENGINE) build -f Dockerfile --build-arg MODEL_RUNTIME=$(IMAGE_RUNTIME) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  --build-arg VERSION=$$($(BIN)/python -c 'import service; print(service.__version__)') \
	  --build-arg SOURCE=$$(git remote get-url origin 2>/dev/null || echo unknown) \
	  -t $(IMAGE) .
	@mkdir -p $(dir $(SBOM)) && ctr=$$($(ENGINE) create $(IMAGE)) && \
	  $(ENGINE) cp $$ctr:/usr/share/doc/densenet-serving/sbom.cdx.json $(SBOM); \
	  rc=$$?; $(ENGINE) rm $$ctr >/dev/null; exit $$rc
	@echo "$(IMAGE): SBOM in $(SBOM)"

# kind's `load docker-image` asks the docker daemon for the image, which does not see podman's
# images: from podman, save an archive and load that.
kind-load: ## load IMAGE into the kind cluster KIND_CLUSTER from the ENGINE that built it
	@if [ "$(ENGINE)" = docker ]; then \
	  set -x; kind load docker-image $(IMAGE) --name $(KIND_CLUSTER); \
	else \
	  tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && set -x && \
	  $(ENGINE) save --format docker-archive -o "$$tmp/image.tar" $(IMAGE) && \
	  kind load image-archive "$$tmp/image.tar" --name $(KIND_CLUSTER); \
	fi

image-check: $(STAMP) ## run the built image read-only as non-root; a corrupt model must exit non-zero
	PYTHON=$(BIN)/python scripts/check-image.sh $(IMAGE)

stack: artifacts ## the local stack: service, Prometheus, Grafana, TensorBoard, Locust (compose.yaml)
	$(COMPOSE) $(if $(PROFILE),--profile $(PROFILE)) build $(if $(NO_CACHE),--no-cache)
	$(COMPOSE) $(if $(PROFILE),--profile $(PROFILE)) up $(if $(DETACH),-d)

stack-down: ## stop the local stack and remove its containers, networks and volumes
	$(COMPOSE) --profile gpu down --volumes --remove-orphans

docs: $(STAMP) ## regenerate the configuration reference, then build the site (strict) into site/
	$(BIN)/python -m service.config_docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean: ## remove results and caches (keeps .venv and models)
	rm -rf $(RESULTS) site .pytest_cache .mypy_cache .ruff_cache
