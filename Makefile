# Two entry points, both self-contained on a fresh machine: `make demo` and `make test`.
# Each creates (or reuses) .venv and installs the project into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test repeat-tests lint venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) cli.py pipeline --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

# The quick subset three times, in fresh processes: any test whose outcome changes between runs is flaky.
repeat-tests: $(STAMP)
	$(PY) scripts/repeat_tests.py --runs 3

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs reports
