# Three commands do everything, including set-up on a fresh machine:
#   make test   - install (once), pytest, nbval on the templates, a strict build of the book,
#                 checks of the built HTML (no external resources, no test markers), then the
#                 book check: every executed page re-run from the committed results and compared
#   make book   - install (once), execute pages missing from book/ (cpu profile without CUDA,
#                 paper with it), build the HTML book into _build/html
#   make bench  - install (once), run the backward-SGD benchmark (results/bench-<device>.*)
# and, when needed:
#   make reproduce PROFILE=cpu [PAGES="fig04-x2 fig05-cos10"] [JOBS=2] - (re-)execute pages
#                 [EXECUTOR=ray] [SHARDS=K] - runs as Ray tasks ($RAY_ADDRESS, else a local Ray),
#                 backward runs cut into K shards; [DEVICE=cpu|cuda|auto] - the runs' device
#                 (default: cuda at the paper profile, rendered from results/*-cuda.json without
#                 CUDA; auto otherwise); [FORCE=1] - replace a page executed at another profile
#   make lock   - re-resolve the whole stack from pyproject.toml into requirements/constraints.txt
#   make gpu-report [DATA_ROOT=.gpu-data] [GPU_REPORT_ARGS="--tiny --out DIR"] - the GPU targets
#                 measured in one report (results/gpu-report-<gpu>.md/.json), at most 8 minutes
#                 on a CUDA machine; runs from a plain checkout (no venv, no install)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Every package of the stack at one exact version (pip freeze of a venv installed from it).
CONSTRAINTS := requirements/constraints.txt
# Re-install only when the dependencies change (the stamp is newer than both files).
STAMP  := $(VENV)/.installed
export DATA_ROOT ?= $(abspath ../shared/data)

PROFILE  ?= cpu
JOBS     ?= 2
PAGES    ?=
# where the runs execute (empty: the runner's defaults, or $ITERATION_ORDER_EXECUTOR/_SHARDS)
EXECUTOR ?=
SHARDS   ?=
DEVICE   ?=
# FORCE=1 replaces a page executed at another profile (e.g. a smoke run over the cpu page)
FORCE    ?=

.PHONY: setup test pytest nbval book build-book check-html check-book reproduce bench gpu-report \
        lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e '.[all]'
	touch $@

pytest: $(STAMP)
	$(PY) -m pytest

# The templates are committed with the outputs of their default (smoke) parameters; nbval re-runs
# them into a throw-away results folder and compares the cells marked NBVAL_CHECK_OUTPUT.
nbval: $(STAMP)
	ITERATION_ORDER_RESULTS=$$(mktemp -d) $(PY) -m pytest --nbval-lax -p no:cacheprovider \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg notebooks

test: pytest nbval build-book check-html check-book

# Renders what book/ holds, executing nothing: pages are executed by `make reproduce`/`make book`.
build-book: $(STAMP)
	$(PY) -m iteration_order.book toc
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going

# The built pages: nothing loaded from another site (MathJax, fonts, scripts are all in _static),
# no nbval markers shown. Deselected from the plain pytest run (marker built_html).
check-html: $(STAMP)
	$(PY) -m pytest -m built_html -p no:cacheprovider tests/test_built_html.py

# The published book follows from the committed results and the current code: `verify` checks,
# executing nothing, that every page in book/ was executed with its registry parameters from its
# current template and that every result it loads is in results/ and valid (naming page, config
# and the command that recomputes it); then nbval re-executes every page with the cache in mode
# `only` (nothing is ever computed here) and compares every cell's outputs with the stored ones,
# figures aside and with what legitimately varies masked (src/iteration_order/book/nbcheck.py).
check-book: $(STAMP)
	$(PY) -m iteration_order.book verify
	$(PY) -m pytest -p iteration_order.book.nbcheck --nbval --nbval-current-env \
	  -p no:cacheprovider book

book: $(STAMP)
	$(PY) -m iteration_order.book run --missing --jobs $(JOBS)
	$(MAKE) build-book

reproduce: $(STAMP)
	$(PY) -m iteration_order.book run --profile $(PROFILE) --jobs $(JOBS) \
	  $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(SHARDS),--shards $(SHARDS)) \
	  $(if $(DEVICE),--device $(DEVICE)) $(if $(PAGES),--only $(PAGES)) $(if $(FORCE),--force)

# Backward-SGD speed ratios (hand loop, sequential and batched engines, processes); < 5 min here.
bench: $(STAMP)
	$(PY) -m iteration_order.bench

# The GPU targets of issues 12 and 22 (python -m iteration_order.gpu_report): no install step, so
# that it runs on a GPU machine without network with its own torch, from the sources (PYTHONPATH);
# the venv's python when there is one, else python3. GPU_REPORT_ARGS=--tiny: the CPU check.
GPU_PY          ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_REPORT_ARGS ?=
gpu-report:
	PYTHONPATH=src $(GPU_PY) -m iteration_order.gpu_report --data-root $(DATA_ROOT) $(GPU_REPORT_ARGS)

# Re-resolve the stack from pyproject.toml's ranges in a throw-away venv (newest versions that fit)
# and freeze it. Run `make test` afterwards: the lock is only as good as the build it passed.
lock:
	set -e; tmp=$$(mktemp -d); \
	$(PYTHON) -m venv $$tmp/venv; \
	$$tmp/venv/bin/pip install --quiet --disable-pip-version-check -e '.[all]'; \
	{ echo "# The whole book and test stack at exact versions, for $$($$tmp/venv/bin/python -V | sed 's/Python/CPython/') on $$(uname -m) $$(uname -s): the pip freeze"; \
	  echo "# of a virtual environment installed with \`pip install -c requirements/constraints.txt -e '.[all]'\`"; \
	  echo "# (Makefile, environment.yml). Regenerate with \`make lock\`, then run \`make test\`; do not edit by hand."; \
	  $$tmp/venv/bin/pip freeze --all --exclude-editable --disable-pip-version-check | grep -v '^pip=='; \
	} > $$tmp/constraints.txt; \
	mv $$tmp/constraints.txt $(CONSTRAINTS); rm -rf $$tmp

clean:
	rm -rf _build
