# Each target creates or reuses the local virtual environment by itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
# Reinstall when the packaging changes; the stamp names the extras installed.
DEPS   := setup.py pyproject.toml

.PHONY: demo test lint typecheck unit zoo bundles bench soak clean venv cpp

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

$(VENV)/.stamp-run: $(BIN)/python $(DEPS)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.stamp-dev: $(BIN)/python $(DEPS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.stamp-run

$(VENV)/.stamp-bench: $(VENV)/.stamp-dev
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

$(VENV)/.stamp-zoo: $(VENV)/.stamp-dev
	$(PY) -m pip install -q -e '.[zoo]'
	touch $@

venv: $(VENV)/.stamp-dev

demo: $(VENV)/.stamp-run
	$(BIN)/jetsplit demo

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check jetsplit edge cloud protocol calibration tools tests bench

# mypy cannot follow the editable install's import hook (jetsplit.edge -> edge/), so
# it checks a tree of links laid out as installed; otherwise every import of
# another part would be Any and go unchecked.
TYPECHECK_TREE := .typecheck
typecheck: $(VENV)/.stamp-dev
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)
	cp -rs $(CURDIR)/jetsplit $(TYPECHECK_TREE)/jetsplit
	for part in edge cloud protocol calibration tools; do cp -rs $(CURDIR)/$$part $(TYPECHECK_TREE)/jetsplit/$$part; done
	cd $(TYPECHECK_TREE) && $(CURDIR)/$(BIN)/mypy --python-version 3.10 --config-file $(CURDIR)/pyproject.toml \
		--cache-dir $(CURDIR)/.mypy_cache -p jetsplit

unit: $(VENV)/.stamp-dev cpp
	sh tests/system/netns_setup.sh
	sh tests/support/browser_setup.sh
	$(BIN)/pytest -q -m "not slow"

# The C++ client (clients/cpp): install the distribution's packages when missing,
# then build into build/cpp, where tests/clients/ runs it against a live worker
# (those tests skip, saying why, when it could not be built).
cpp:
	sh clients/cpp/deps.sh
	if command -v cmake >/dev/null 2>&1; then \
	    cmake -S clients/cpp -B build/cpp -DCMAKE_BUILD_TYPE=Release >/dev/null \
	    && cmake --build build/cpp -j2 \
	    || echo "the C++ client did not build: tests/clients/ will say why"; \
	else echo "cmake not found: the C++ client is not built"; fi

# The README's test command: static 3.10 checks, then every test this machine can run.
test: lint typecheck unit

# Retrain the demo zoo (torch, CPU) and rebuild the demo bundles from it.
zoo: $(VENV)/.stamp-zoo
	$(PY) -m jetsplit.tools.zoo
	$(MAKE) bundles

bundles: $(VENV)/.stamp-dev
	$(PY) -m jetsplit.tools.demo_bundles

bench: $(VENV)/.stamp-bench
	$(BIN)/pytest -q -m slow bench || test $$? -eq 5

soak: $(VENV)/.stamp-dev
	sh tests/system/netns_setup.sh
	$(BIN)/pytest -q -m slow tests

clean:
	rm -rf $(VENV) build *.egg-info
