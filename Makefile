# Two commands do everything, including set-up on a fresh machine:
#   make test   - install (once), pytest, nbval on the templates, a strict build of the book
#   make book   - install (once), execute pages missing from book/ (cpu profile without CUDA,
#                 paper with it), build the HTML book into _build/html
#   make reproduce PROFILE=cpu [PAGES="fig04-x2 fig05-cos10"] [JOBS=2] - (re-)execute pages
#   make bench  - install (once), run the backward-SGD benchmark (results/bench-<device>.*)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Re-install only when the dependency list changes (the stamp is newer than pyproject.toml).
STAMP  := $(VENV)/.installed
export DATA_ROOT ?= $(abspath ../shared/data)

PROFILE ?= cpu
JOBS    ?= 2
PAGES   ?=

.PHONY: setup test pytest nbval book build-book reproduce bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[all]'
	touch $@

pytest: $(STAMP)
	$(PY) -m pytest

# The templates are committed with the outputs of their default (smoke) parameters; nbval re-runs
# them into a throw-away results folder and compares the cells marked NBVAL_CHECK_OUTPUT.
nbval: $(STAMP)
	ITERATION_ORDER_RESULTS=$$(mktemp -d) $(PY) -m pytest --nbval-lax -p no:cacheprovider \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

test: pytest nbval build-book

# Renders what book/ holds, executing nothing: pages are executed by `make reproduce`/`make book`.
build-book: $(STAMP)
	$(PY) -m iteration_order.book toc
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going

book: $(STAMP)
	$(PY) -m iteration_order.book run --missing --jobs $(JOBS)
	$(MAKE) build-book

reproduce: $(STAMP)
	$(PY) -m iteration_order.book run --profile $(PROFILE) --jobs $(JOBS) $(if $(PAGES),--only $(PAGES))

# Backward-SGD speed ratios (hand loop, sequential and batched engines, processes); < 5 min here.
bench: $(STAMP)
	$(PY) -m iteration_order.bench

clean:
	rm -rf _build
