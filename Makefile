# The README's commands are targets here. Every target installs what it needs into .venv.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

# Runtime requirements only (no torch): what the demo, training, conversion and evaluation need.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# Plus the test-only references (torch CPU, transformers).
$(VENV)/.installed: $(VENV)/.runtime requirements-test.txt
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

.PHONY: demo test test-all bench-forward bench-convert bench-sampler bench-decode-profile bench-precision bench-data bench-train-step bench-eval bench-decode-accuracy plan

## The main job: train a tiny LLaDA-V on synthetic shapes and ask it questions (re-runs reuse workdir/demo).
demo: $(VENV)/.runtime
	$(PY) -m lladav_jax.demo

## Fast test suite (what CI runs).
test: $(VENV)/.installed
	$(PY) -m pytest -q

## Everything, slow tests included.
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m ""

## Forward throughput against transformers' torch Llama, and the prompt's encoding against torch's (CPU).
bench-forward: $(VENV)/.installed
	$(PY) bench/forward.py

## Peak memory and throughput of weight conversion (1.2 GB synthetic checkpoint, deleted afterwards).
bench-convert: $(VENV)/.installed
	$(PY) bench/convert.py

## Decoding throughput: jitted sampler (caches, dLLM-Cache, threshold) vs upstream's loop in torch (CPU).
bench-sampler: $(VENV)/.installed
	$(PY) bench/sampler.py

## Where an exact decode's time goes (jax.profiler trace, by part of the model), and a step against a forward (CPU).
bench-decode-profile: $(VENV)/.installed
	$(PY) bench/decode_profile.py

## Accuracy vs speed of the caches and parallel decoding on the trained demo model (needs `make demo` first).
bench-decode-accuracy: $(VENV)/.installed
	$(PY) bench/decode_accuracy.py

## How often bfloat16 / float16 greedy decodes agree with float32 (random models, and the demo model if trained).
bench-precision: $(VENV)/.installed
	$(PY) bench/precision.py

## Data pipeline throughput (anyres_max_4 on 640x480 JPEGs, 1 and 2 workers).
bench-data: $(VENV)/.installed
	$(PY) bench/data.py

## Train-step time against a straightforward torch step (CPU).
bench-train-step: $(VENV)/.installed
	$(PY) bench/train_step.py

## Evaluation throughput: batch 1 vs 16, KV cache and threshold decoding (CPU).
bench-eval: $(VENV)/.installed
	$(PY) bench/eval.py

## 8B train step compiled for simulated 64- and 256-device meshes, 8192- and 16384-token rows (docs/scaling.md).
plan: $(VENV)/.installed
	$(PY) tools/plan.py --devices 64
	$(PY) tools/plan.py --devices 256 --mesh data=2,fsdp=128,tensor=1
	$(PY) tools/plan.py --devices 64 --config configs/stage2_ov.py
	$(PY) tools/plan.py --devices 256 --mesh data=2,fsdp=128,tensor=1 --config configs/stage2_ov.py
