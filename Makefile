# Every target is self-sufficient: it creates the environment first if it is missing.
VENV    ?= .venv
PYTHON  ?= python3
PROFILE ?= demo
BIN     := $(VENV)/bin

# idle OpenMP threads wait passively: spinning ones slow everything else on a small machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-score setup-notebooks setup-demo browser voices demo test reproduce lab bench clean-outputs

# What each target installs (pyproject.toml's extras): `setup` everything, for make test and make bench;
# `setup-score` the core only (sqa score, sqa.load, sqa export --format pt2); `setup-notebooks` the
# pipeline (make lab); `setup-demo` the pipeline and the demo corpus (make demo, make reproduce).
setup: $(VENV)/.installed-dev
setup-score: $(VENV)/.installed-core
setup-notebooks: $(VENV)/.installed-notebooks
setup-demo: $(VENV)/.installed-demo

$(VENV)/.installed-%: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.$(if $(filter core,$*),,[$*])'
	touch $@

demo: setup-demo
	$(BIN)/sqa reproduce --profile demo --quick

# Debian's Chromium for the browser test (Playwright drives it; it never downloads a browser).
# Installed when missing and root can apt-get; otherwise that one test is skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is not installed: the browser test will be skipped"

# Debian's voices, human speech recordings and codec tools (sqa.synth.voices.DEBIAN_PACKAGES) for the
# release pool and their tests; installed when missing and root can apt-get, else those tests skip
voices:
	@missing=$$(for p in $$($(BIN)/python -c "from sqa.synth.voices import DEBIAN_PACKAGES as P; print(*P)"); do \
	  dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); [ -z "$$missing" ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } || \
	  echo "not installed: $$missing (the voices and codecs they provide are skipped)"

# one worker per core; --dist loadscope keeps a module's tests (and its module-scoped fixtures,
# such as the notebook chain) on one worker; the slowest tests are listed at the end
test: setup browser voices
	$(BIN)/python -m pytest -q -n auto --dist loadscope --durations=25

reproduce: setup-demo voices
	$(BIN)/sqa reproduce --profile $(PROFILE)

lab: setup-notebooks
	$(BIN)/jupyter lab notebooks

bench: setup
	$(BIN)/python -m bench

clean-outputs:
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitkeep -exec rm -rf {} +
