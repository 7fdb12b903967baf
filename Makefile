# The two commands of a fresh machine (see README):
#   make evals   install, then run the eval suite on the embedded default model and write reports/latest/
#   make test    install, then lint and run the harness's own tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EVAL_ARGS ?=

.PHONY: install browser evals test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU wheel of 2.13.0 lies on this machine's disk, while an unpinned torch (asked for
# directly or by a dependency) pulls a multi-GB CUDA build.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Debian's chromium drives the real-browser test of report.html (playwright's own browser download needs a network).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

evals: install
	$(BIN)/pytest evals $(EVAL_ARGS)

lint: install
	$(BIN)/ruff check src tests evals bench
	$(BIN)/ruff format --check src tests evals bench

test: install browser lint
	$(BIN)/pytest tests -n 2

clean:
	rm -rf $(VENV) .debug_cache results reports/*/ build *.egg-info src/*.egg-info
