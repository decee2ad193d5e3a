# Crucible: `make run` starts everything on this machine; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PORT

.PHONY: run test install install-dev browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Debian's Chromium for the browser tests (Playwright drives it; it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the browser tests" >&2; exit 1; fi; }

run: install
	$(BIN)/python manage.py crucible_run --port $(PORT)

# The suite in two halves at once, one per core (tests/run.sh); `$(BIN)/pytest` alone runs it in one.
test: install-dev browser
	PYTEST=$(BIN)/pytest tests/run.sh

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run

bench: install
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_accuracy.py
	$(BIN)/python bench/bench_import.py

clean:
	rm -rf var
