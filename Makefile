# Two commands do everything, including set-up on a fresh machine:
#   make test   - install (once), run the package tests, build the book
#   make book   - install (once), build the HTML book into _build/html
#   make bench  - install (once), run the backward-SGD benchmark (results/bench-<device>.*)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install only when the dependency list changes (the stamp is newer than pyproject.toml).
STAMP  := $(VENV)/.installed
export DATA_ROOT ?= $(abspath ../shared/data)
export MPLBACKEND := Agg

.PHONY: setup test pytest book bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $@

pytest: $(STAMP)
	$(PY) -m pytest

test: pytest book

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going

# Backward-SGD speed ratios (hand loop, sequential and batched engines, processes); < 5 min here.
bench: $(STAMP)
	$(PY) -m iteration_order.bench

clean:
	rm -rf _build
