# The two commands of the README. Each sets itself up on a fresh machine: a virtual environment in .venv with
# the package and its dev extras, reinstalled whenever pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo reproduce lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --output demo_output --update-results

# The reproduction study: at most 60 minutes on 2 CPU cores (docs/results.md, "Reproduction study").
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py --output reproduce_output --update-results
