# The README's commands are targets here. Every target installs what it needs into .venv.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

.PHONY: test test-all bench-forward bench-convert bench-sampler bench-data bench-train-step bench-eval plan

## Fast test suite (what CI runs).
test: $(VENV)/.installed
	$(PY) -m pytest -q

## Everything, slow tests included.
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

## Forward throughput against transformers' torch Llama (CPU).
bench-forward: $(VENV)/.installed
	$(PY) bench/forward.py

## Peak memory and throughput of weight conversion (1.2 GB synthetic checkpoint, deleted afterwards).
bench-convert: $(VENV)/.installed
	$(PY) bench/convert.py

## Decoding throughput: jitted sampler (cache, threshold) vs a per-step Python loop (CPU).
bench-sampler: $(VENV)/.installed
	$(PY) bench/sampler.py

## Data pipeline throughput (anyres_max_4 on 640x480 JPEGs, 1 and 2 workers).
bench-data: $(VENV)/.installed
	$(PY) bench/data.py

## Train-step time against a straightforward torch step (CPU).
bench-train-step: $(VENV)/.installed
	$(PY) bench/train_step.py

## Evaluation throughput: batch 1 vs 16, KV cache and threshold decoding (CPU).
bench-eval: $(VENV)/.installed
	$(PY) bench/eval.py

## 8B train step compiled for simulated 64- and 256-device meshes (docs/scaling.md).
plan: $(VENV)/.installed
	$(PY) tools/plan.py --devices 64
	$(PY) tools/plan.py --devices 256 --mesh data=2,fsdp=128,tensor=1
