# radpath — the two commands: `make demo` runs the main job, `make test` passes the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install system-deps clean ui

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "radpath needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/radpath demo

# A local Prefect UI on http://127.0.0.1:4200; run `PREFECT_API_URL=http://127.0.0.1:4200/api make demo` beside it.
ui: $(STAMP)
	$(BIN)/radpath ui

system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-fhir-test-tools.sh
	bash scripts/install-inference-server.sh

# bandit: a high-severity finding fails the build; lower ones are reviewed, not blocking
# (`$(BIN)/bandit -r radpath integrations pathways flows tasks deployments` lists them).
SECURITY_SCAN := radpath integrations pathways flows tasks deployments models bench scripts

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/bandit -q -r $(SECURITY_SCAN) --severity-level high
	$(BIN)/python -m pytest

clean:
	rm -rf .radpath test-output
