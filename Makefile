# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck check examples clean

$(STAMP): pyproject.toml api/pyproject.toml browser/package-lock.json scripts/system_deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e ".[dev]" -e ./api
	scripts/system_deps.sh
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/thisme-stac demo

# pytest exits 5 when it collected no test: that is a failure here.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: no test was collected" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

examples: install
	$(BIN)/python scripts/regenerate_examples.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
