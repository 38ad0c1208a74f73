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
WORKERS ?= 2  # service worker processes: one per core of the 2-core target machine

.PHONY: install test demo materialize serve dagster daemon-demo bench audit clean

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
	$(VENV)/bin/recsys serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

MANIFEST := var/artifacts/serving/manifest.json

# A second `make demo` reuses what is materialized (delete var/ or run `make materialize` to rebuild).
demo: install $(DAGSTER_HOME)
	@if [ -f $(MANIFEST) ]; then echo "Reusing the materialized assets ($(MANIFEST)); 'make materialize' rebuilds them."; \
	else $(VENV)/bin/recsys materialize --users $(DEMO_USERS) --places $(DEMO_PLACES); fi
	@echo
	@echo "Every asset is materialized for every city (artifacts under var/artifacts)."
	@echo "Starting the service on http://$(HOST):$(PORT)  (API docs: /schema, try /recommend/places?user_id=1)"
	@echo "Dagster UI in another shell:  make dagster   (then http://127.0.0.1:3000)"
	$(VENV)/bin/recsys serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

dagster: install $(DAGSTER_HOME)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(PY) -m bench.run

# The schedule and sensors under the real daemon, end to end, in var/daemon_demo (its own
# DAGSTER_HOME, artifacts and inbox): a small world, `dagster dev`, the service, a valid and a bad
# inbox file. Writes docs/daemon_demo.md; exits non-zero if any step fails.
# 2,500 users: on 800 the held-out friend pairs are ~150, and the quality gate's "friend ROC-AUC above
# feature cosine" is a coin flip (the retrain after an ingest failed it once); on 2,500 (~1,000 pairs) it holds.
DAEMON_DEMO_USERS ?= 2500
DAEMON_DEMO_PLACES ?= 2500
daemon-demo: install
	$(PY) -m bench.daemon_demo --users $(DAEMON_DEMO_USERS) --places $(DAEMON_DEMO_PLACES)

# Known vulnerabilities in the installed environment (the editable project itself excluded).
# The versions pip lists are audited as pinned requirements, local build tags dropped (torch's
# "+cpu" is the public 2.13.0 release). --strict: a dependency that cannot be checked (service
# unreachable, unknown to it) fails the audit instead of passing unchecked. Exit 1 on any known
# vulnerability. The PyPI advisory service needs only pypi.org; AUDIT_SERVICE=osv uses api.osv.dev.
AUDIT_SERVICE ?= pypi
audit: install
	@$(PY) -m pip list --format=freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9_.]+$$//' > $(VENV)/audit-requirements.txt
	@echo "Auditing $$(wc -l < $(VENV)/audit-requirements.txt) installed distributions against the '$(AUDIT_SERVICE)' vulnerability service"
	$(VENV)/bin/pip-audit --requirement $(VENV)/audit-requirements.txt --no-deps --disable-pip --strict \
		--vulnerability-service $(AUDIT_SERVICE) --desc on --aliases on --progress-spinner off \
		|| { rc=$$?; echo "make audit FAILED (exit $$rc): known vulnerabilities listed above, or a dependency could not be checked (the ERROR line)" >&2; exit $$rc; }

clean:
	rm -rf var bench/out
