# Everything runs from the project-local .venv; `make demo` and `make test` create it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(CURDIR)/var/dagster_home
DEMO_USERS ?= 10000
DEMO_PLACES ?= 10000
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install test demo materialize serve dagster daemon-demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, from the CPU wheel; everything else must be satisfied by it.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q

$(DAGSTER_HOME):
	mkdir -p $(DAGSTER_HOME)

materialize: install $(DAGSTER_HOME)
	$(VENV)/bin/recsys materialize --users $(DEMO_USERS) --places $(DEMO_PLACES)

serve: install
	$(VENV)/bin/recsys serve --host $(HOST) --port $(PORT)

MANIFEST := var/artifacts/serving/manifest.json

# A second `make demo` reuses what is materialized (delete var/ or run `make materialize` to rebuild).
demo: install $(DAGSTER_HOME)
	@if [ -f $(MANIFEST) ]; then echo "Reusing the materialized assets ($(MANIFEST)); 'make materialize' rebuilds them."; \
	else $(VENV)/bin/recsys materialize --users $(DEMO_USERS) --places $(DEMO_PLACES); fi
	@echo
	@echo "Every asset is materialized for every city (artifacts under var/artifacts)."
	@echo "Starting the service on http://$(HOST):$(PORT)  (API docs: /schema, try /recommend/places?user_id=1)"
	@echo "Dagster UI in another shell:  make dagster   (then http://127.0.0.1:3000)"
	$(VENV)/bin/recsys serve --host $(HOST) --port $(PORT)

dagster: install $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(PY) -m bench.run

# The schedule and sensors under the real daemon, end to end, in var/daemon_demo (its own
# DAGSTER_HOME, artifacts and inbox): a small world, `dagster dev`, the service, a valid and a bad
# inbox file. Writes docs/daemon_demo.md; exits non-zero if any step fails.
DAEMON_DEMO_USERS ?= 800
DAEMON_DEMO_PLACES ?= 800
daemon-demo: install
	$(PY) -m bench.daemon_demo --users $(DAEMON_DEMO_USERS) --places $(DAEMON_DEMO_PLACES)

clean:
	rm -rf var bench/out
