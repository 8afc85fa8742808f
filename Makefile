# Every target is self-sufficient: it creates the environment first if it is missing.
VENV    ?= .venv
PYTHON  ?= python3
PROFILE ?= demo
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: setup demo test reproduce lab bench clean-outputs

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/sqa reproduce --profile demo

test: setup
	$(BIN)/python -m pytest -q

reproduce: setup
	$(BIN)/sqa reproduce --profile $(PROFILE)

lab: setup
	$(BIN)/jupyter lab notebooks

bench: setup
	$(BIN)/python -m bench

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
