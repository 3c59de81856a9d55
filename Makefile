# The README's two commands: `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# The demo and `make dev` share one Dagster instance and one data folder inside the checkout;
# the demo's gate is production's, and its maintenance window is always open, so with `make dev`
# running a commit to a sample repo flows through to a new dataset version, training, evaluation
# and deployment without anyone launching a run (with the demo's short settings for the dev model).
DEMO_ENV := CODER_ASSETS_HOME=$(CURDIR)/.demo DAGSTER_HOME=$(CURDIR)/.dagster_home \
  CODER_ASSETS_MAINTENANCE_WINDOW=always CODER_ASSETS_DEMO_SETTINGS=1
# Debian packages the tests need: git (with git-http-backend), chromium for the browser test,
# openssh-server and -client for the waterdeep executor's ssh transport (sshd started by a test),
# git-lfs for adapter releases (weights as LFS objects), caddy for the authenticating proxy in front
# of the model server, openssl for the test CA of its TLS test.
DEBIAN_PACKAGES := git git-lfs chromium openssh-server openssh-client caddy openssl

.PHONY: help demo test dev mlflow lint format venv system-deps instance clean repo backfill

help:
	@echo "make demo   set up and materialize the whole graph on the embedded default"
	@echo "make test   set up and run lint and every test"
	@echo "make dev    open the Dagster UI on http://127.0.0.1:3000 (same instance as make demo)"
	@echo "make mlflow open the demo's MLflow runs on http://127.0.0.1:5000"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(STAMP)

system-deps:
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing; \
	fi

.dagster_home/dagster.yaml: dagster.yaml
	mkdir -p .dagster_home
	cp dagster.yaml $@

instance: .dagster_home/dagster.yaml

demo: venv system-deps instance
	$(DEMO_ENV) $(BIN)/coder-assets demo

dev: venv instance
	$(DEMO_ENV) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The demo's MLflow runs (local SQLite store), on http://127.0.0.1:5000
mlflow: venv
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.demo/mlflow/mlflow.db \
	  --host 127.0.0.1 --port 5000

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: venv system-deps lint
	$(BIN)/python -m pytest --durations=15

clean:
	rm -rf .demo .dagster_home

# One repository now, e.g. `make repo REPO=homelab~homelab-flux` (partition keys: owner~name).
repo: venv instance
	@test -n "$(REPO)" || { echo "usage: make repo REPO=owner~name"; exit 2; }
	$(DEMO_ENV) $(BIN)/dagster asset materialize -m coder_assets.definitions \
	  --select repo_snapshots,instruction_pairs,fim_samples --partition "$(REPO)"

# Every repository, as a backfill that the daemon of `make dev` runs.
backfill: venv instance
	$(DEMO_ENV) $(BIN)/dagster job backfill -w workspace.yaml -j repo_job \
	  --all true --noprompt
