# The README's commands are targets here. Every target installs what it needs into .venv.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

.PHONY: test test-all bench-forward

## Fast test suite (what CI runs).
test: $(VENV)/.installed
	$(PY) -m pytest -q

## Everything, slow tests included.
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

## Forward throughput against transformers' torch Llama (CPU).
bench-forward: $(VENV)/.installed
	$(PY) bench/forward.py
