# quantbench: `make run` runs the default experiment, `make test` runs the test suite.
# Both create .venv and install what they need; nothing else is required on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The Keras cache with flower_photos and the MobileNetV2 weights. Offline machines (like our
# CI) keep one beside the repo in ../shared/keras; elsewhere it is ~/.keras as usual.
KERAS_HOME ?= $(if $(wildcard ../shared/keras),$(abspath ../shared/keras),$(HOME)/.keras)
export KERAS_HOME

ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install install-test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test browser

# Headless Chromium for the report's browser test (Debian's package; Playwright drives it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

run: install
	$(BIN)/quantbench run $(ARGS)

# The layering contracts first (seconds), then the suite in two lanes: everything but the
# `serial` tests in two processes (one per core; most tests wait on TensorFlow imports and
# worker processes), then the serial ones alone (they time the machine or wait on signals).
# Line coverage of both lanes (the test processes'; worker processes are not traced), with the
# modules below 100% listed.
XDIST ?= -n 2 --dist loadfile
test: install-test
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(XDIST) -m "not serial" --cov=quantbench --cov-report= $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m serial --cov=quantbench --cov-append --cov-report=term:skip-covered $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info test-artifacts
