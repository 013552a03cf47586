# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-fast lint install install-dev clean bench bench-large translations messages

CATALOGS := $(patsubst %.po,%.mo,$(wildcard translations/*/LC_MESSAGES/messages.po))

run: $(VENV)/.installed-run translations
	$(PY) cli.py init
	$(PY) cli.py serve

test: $(VENV)/.installed-dev translations lint
	$(PY) -m pytest

# The edit loop: everything but the slow tests (processes, browser, races, property runs),
# on every core.
test-fast: $(VENV)/.installed-dev translations
	$(PY) -m pytest -m "not slow" -n auto

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	# The architecture: which layer may import which (pyproject.toml, tool.importlinter).
	$(VENV)/bin/lint-imports --no-cache
	# Security lint; each exception is marked (and justified) where it stands.
	$(VENV)/bin/bandit --quiet --recursive . --exclude ./.venv,./tests,./bench,./test-artifacts

# Timings of twoyes against bare baselines, as same-run ratios (bench/results.json); ~5 min.
bench: $(VENV)/.installed-dev
	$(PY) bench/run.py

# The sweep and the idle tick at a million rounds: flat memory, linear time
# (bench/results-large.json); ~20 min and ~8 GB of disk in bench/data/ while it runs.
bench-large: $(VENV)/.installed-dev
	$(PY) bench/large.py

# The compiled catalogues are built here, never committed.
translations: $(CATALOGS)

translations/%/LC_MESSAGES/messages.mo: translations/%/LC_MESSAGES/messages.po $(VENV)/.installed-run
	$(VENV)/bin/pybabel compile -i $< -o $@

# For translators: gather every sentence of the code and templates, and add new ones to the .po.
messages: $(VENV)/.installed-run
	$(VENV)/bin/pybabel extract -F babel.cfg -k N_ --no-location --sort-output \
		--ignore-dirs='.venv tests bench' -o translations/messages.pot .
	$(VENV)/bin/pybabel update -i translations/messages.pot -d translations \
		--no-fuzzy-matching --ignore-obsolete --width 100

install: $(VENV)/.installed-run translations
install-dev: $(VENV)/.installed-dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-run: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
