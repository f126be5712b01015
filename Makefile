# Serving Guard: every target works from a fresh clone with only Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test lint types pytest demo bench bench-smoke clean venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when pyproject.toml changes (the stamp name carries its checksum).
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# checkov is heavy and pins its own dependencies: it gets a virtualenv of its own.
SCAN_VENV := .venv-scan
CHECKOV   := $(SCAN_VENV)/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet 'checkov==3.3.30'

lint: $(STAMP)
	$(BIN)/ruff check responder simulators tests bench
	$(BIN)/ruff format --check responder simulators tests bench

types: $(STAMP)
	$(BIN)/mypy responder simulators tests bench

pytest: $(STAMP) $(CHECKOV)
	SERVING_GUARD_CHECKOV=$(abspath $(CHECKOV)) $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint types pytest

demo: $(STAMP)
	$(BIN)/serving-guard demo --report demo-report.html

bench: $(STAMP)
	$(BIN)/python -m bench.run --out bench/results.json

bench-smoke: $(STAMP)
	$(BIN)/python -m bench.run --smoke --out $(VENV)/bench-smoke.json

clean:
	rm -rf $(VENV) $(SCAN_VENV) .mypy_cache .pytest_cache .ruff_cache demo-report.html
