# The README's whole set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Reference PyTorch architectures for the parity tests. Installed without dependencies: spandrel
# declares torchvision, which it imports only for two architectures we never build, and PyPI's
# torchvision does not import beside the pinned CPU torch (tests/conftest.py adds a shim instead).
SPANDREL := spandrel==0.4.2 spandrel-extra-arches==0.2.0
PYTEST_ARGS ?= -n 2

.PHONY: demo test install install-test clean

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/activate pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	$(PIP) install --quiet --no-deps $(SPANDREL)
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/jaxrestore demo --out demo_out --overwrite

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_out build *.egg-info
