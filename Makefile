# The README's two commands: `make demo` and `make test`. Both create or reuse
# a virtual environment, install the package, and then run the main job or the tests.
PYTHON ?= python3
VENV ?= .venv
# Pinned here, not in pyproject: on CPU-only machines this version resolves to a
# local CPU build; elsewhere the same line brings the CUDA build.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# The tests run in one process per core (pytest-xdist; at most 4), each test file in one
# process so its module fixtures are built once: on 2 cores the suite takes ~2/3 of the
# serial time. `make test PYTEST_JOBS=` runs them serially.
PYTEST_JOBS ?= -n auto --maxprocesses=4 --dist loadfile
STAMP := $(VENV)/.arches-installed

.PHONY: setup demo test tour clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# PYTHONWARNINGS hides setuptools' notice that an editable install is one (a boxed
# paragraph with nothing to act on), so set-up prints only pip's progress.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH)"
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/arches compare

test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q tests $(PYTEST_JOBS); \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# The README's tour, command by command, small and offline (CI runs it after the tests).
tour: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python tests/readme_tour.py

clean:
	rm -rf $(VENV) *.egg-info
