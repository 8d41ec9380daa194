# `make demo` and `make test` work on a fresh clone: they create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint docs clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PIP) -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m protoattn demo

# Offline, warnings as errors, every page read afresh (-E: an incremental build would not repeat the warnings
# of pages it does not reread). The notebooks are rendered from their committed outputs, not run.
SPHINX = $(PY) -m sphinx -W --keep-going -E -b html docs docs/_build/html

test: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(SPHINX)
	PROTOATTN_DOCS_HTML=docs/_build/html $(PY) -m pytest protoattn tests README.md docs

docs: $(VENV)/.installed-docs
	$(SPHINX)
	@echo "open docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/notebooks
