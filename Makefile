# `make demo` and `make test` each create .venv when it is missing, install, and run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# torch is pinned in the same pip command as everything else so that pip takes the local CPU wheel.
TORCH ?= torch==2.13.0

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mdyn demo

# Lint, format and types first (seconds); then the tests. loadfile: each test module runs on one worker, so one
# worker starts the Slurm cluster tests/slurm/test_slurm.py shares.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) demo-output
