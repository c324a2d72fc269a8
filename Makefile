# SynthLab: `make run` sets up and starts the lab; `make test` sets up and passes the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
ADDRESS ?=  # e.g. make run ADDRESS=127.0.0.1: listen on this address only (default: every interface)
# Open a browser tab when there is a desktop to open it on; servers stay headless.
OPEN_BROWSER := $(if $(or $(DISPLAY),$(filter Darwin,$(shell uname -s))),--server.headless=false,)

.PHONY: run test test-all lint chromium clean

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(BIN)/.runtime
	$(BIN)/python -m ui.serve --server.port $(PORT) $(if $(ADDRESS),--server.address $(ADDRESS)) $(OPEN_BROWSER)

# Debian's chromium drives the one real-browser test; installed when missing and we may.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not found and cannot be installed here; the browser test will be skipped"; fi; }

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/.dev chromium lint
	$(BIN)/python -m pytest

test-all: $(BIN)/.dev chromium lint
	$(BIN)/python -m pytest -m ""

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
