# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP      := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.installed-test-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test test-long install install-test benchmarks fuzz assets clean

demo: $(STAMP)
	$(BIN)/planner demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 -m "not long" tests

# The long campaigns (e.g. the 60-target cohort on a Dask cluster), left out of make test.
test-long: $(TEST_STAMP)
	$(BIN)/python -m pytest -m long tests

benchmarks: $(TEST_STAMP)
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/segment.py
	$(BIN)/python benchmarks/plan.py
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/register.py
	$(BIN)/python benchmarks/needle.py
	$(BIN)/python benchmarks/check.py
	$(BIN)/python benchmarks/pacs.py
	$(BIN)/python benchmarks/batch.py

# A longer fuzzing campaign of every file reader (5 minutes; e.g. FUZZ_ARGS="nrrd markups -n 5000").
fuzz: $(TEST_STAMP)
	$(BIN)/python benchmarks/fuzz.py $(FUZZ_ARGS)

# Regenerates the embedded demo cases in assets/ (deterministic).
assets: $(STAMP)
	$(BIN)/python demos/build_assets.py

install: $(STAMP)
install-test: $(TEST_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(TEST_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP) $@

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
