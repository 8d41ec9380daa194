# `make demo` and `make test` work on a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m protoattn demo

test: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m pytest protoattn tests README.md

clean:
	rm -rf $(VENV) build *.egg-info
