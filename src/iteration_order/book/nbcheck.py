"""The book check: every executed page re-run from the committed results, its outputs compared.

A pytest plugin for nbval, loaded only by ``make check-book``::

    python -m pytest -p iteration_order.book.nbcheck --nbval --nbval-current-env book

For every notebook the runner executed (``metadata.iteration_order.page``), nbval re-executes
the page's code cells in a fresh kernel and compares each cell's outputs with the stored ones.
This plugin makes that comparison the book's guarantee:

* **cache-only**: ``$ITERATION_ORDER_CACHE`` is set to ``only`` (the kernels inherit it), so a
  missing, stale or unreadable result raises `MissingResultError` instead of starting a
  computation of hours; the failure names the page, its profile and the command that recomputes
  it, and the page's later cells are skipped rather than reported as a cascade of NameErrors;
* **every cell**, not only those marked ``# NBVAL_CHECK_OUTPUT``: tables (``text/html``), glued
  numbers and markdown (``application/papermill.record/text/plain``, ``.../text/markdown``),
  printed text, the figures' ``text/plain`` (size and number of axes);
* **figures are not compared byte for byte**: nbval already skips ``image/png``; the glued
  copies (``application/papermill.record/image/png`` and the other image types) are skipped too,
  because a rasterised figure depends on the fonts and FreeType of the machine that drew it. What
  a figure shows is compared through the numbers: its data are the tables' and glued values of
  the same run, and its caption (glued markdown) is compared;
* **what legitimately varies is masked** (`PATTERNS`, applied to both sides): the computation's
  log (run_many's cost table and progress lines, which a re-run from the cache does not print,
  and Python warnings, raised while results are computed — a recomputed stale file, a library
  deprecation on the path of a computation — but not when they are loaded), compute and wall
  times, durations, dates,
  absolute paths, memory addresses, and in the provenance line the git commit and the Python and
  torch versions of the machine that executes the page (the torch version each run was computed
  with comes from the stored results and stays compared). A stream left empty by the masks is
  dropped, so that a cell that only logged a computation matches one that printed nothing.

* **nothing unchecked is executed**: before a page's first cell runs (before its kernel starts),
  the page is checked as ``verify`` checks it against the registry and its template
  (`verify.drift_problems`: its injected-parameters cell exactly what papermill renders from the
  registry, its other cells the template's, the runner's header and conclusion markdown, and
  `verify.prose_problems`: that header and conclusion as the registry renders them now); a page
  that fails is refused — its first cell fails naming the problem, the others are skipped, and
  none of its code runs. ``make check-book`` runs ``verify`` first, which stops on the same
  problems; this guards a direct run of the nbval half.

Anything else that differs fails the check: a page whose numbers no longer follow from the
committed results and the current code must be re-executed (``python -m iteration_order.book run
--profile P --only PAGE --force``) and committed.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

from ..cache import CACHE_ENV, RESULTS_ENV
from .registry import ROOT, use_default_data_root
from .verify import ExecutedPage, drift_problems, prose_problems, rerun_command

__all__ = ["PATTERNS", "FIGURE_KEYS", "sanitise"]

_GLUE = "application/papermill.record/"
# Rasterised or vector figures, shown (nbval skips only png and jpeg itself) or glued.
_FIGURES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
FIGURE_KEYS = _FIGURES + tuple(_GLUE + mime for mime in _FIGURES)

# (regex, replacement), in this order, on every compared text of both the stored and the re-run
# outputs. Each masks something that differs between two executions of the same page on the
# same results; none can hide a number computed from the results.
PATTERNS = {
    # the digest of a figure's PNG (display.glue): a raster depends on the machine's fonts, so it
    # is checked by `verify` against the stored image, not against a re-run's drawing
    r"'png sha256:[0-9a-f]{64}'": "'png sha256:(masked)'",
    # run_many's announcement before it computes (parallel._announce, cost.cost_table): printed
    # when a page's runs were computed, never when they are loaded
    r"(?m)^\d+ of \d+ runs cached; to run:\n(?:.*\n)*?"
    r"(?:estimated wall time with [^\n]*|\(no cost estimate: [^\n]*\))\n": "",
    # ... its progress lines (parallel._Log), and its retry note
    r"(?m)^\[\d+/\d+(?:, \d+ failed)?\] [^\n]* after [^;\n]+; about [^\n]+ left\n": "",
    r"(?m)^a worker process died, which ends its whole pool: [^\n]*\n": "",
    # Python warnings (file:line: Category: message, then the source line): raised while a
    # page's results were computed and not when they are loaded (a stale file recomputed, a
    # library deprecated on the path of a computation), and naming installed files
    r"(?m)^[^\n]*:\d+: \w*Warning: [^\n]*\n(?:  [^\n]*\n)?": "",
    # how long the results took to compute (stored with them, different after any recomputation)
    r"\b\d+(?:\.\d+)? (min|s) of (compute|wall time)": r"N \1 of \2",
    r"\b\d{4}-\d\d-\d\d(?:[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?\b": "DATE",
    r"\b\d+:\d\d:\d\d\b": "H:MM:SS",
    # the provenance line (provenance.provenance): the commit that executed the page, and this
    # machine's Python and torch
    r"at commit `[^`]*`": "at commit `COMMIT`",
    r"Python \d+\.\d+\.\d+\S*, torch \S+ \([^)]*\)": "Python VERSION, torch VERSION (MACHINE)",
    r"0x[0-9a-f]{6,}": "0xADDRESS",
    # absolute paths (results folder, data root, site-packages in a warning): not after a word
    # character, a closing bracket or a slash, so that 2/h, λ/(2/h), </td> and URLs stay
    r"(?<![\w)\]>/.])/(?:[\w.+@~-]+/)+[\w.+@~-]*": "PATH",
}


def sanitise(text: str) -> str:
    """``text`` with `PATTERNS` applied, as the check compares it."""
    for regex, replacement in PATTERNS.items():
        text = re.sub(regex, replacement, text)
    return text


def _page(item) -> tuple[str, str, str] | None:
    """(page, profile, notebook path as shown) of an nbval cell of an executed book page; None
    for anything else."""
    nb = getattr(getattr(item, "parent", None), "nb", None)
    meta = nb.metadata.get("iteration_order", {}) if nb is not None else {}
    if not meta.get("page"):
        return None
    path = Path(str(item.parent.fspath)).resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return meta["page"], meta.get("profile", "cpu"), str(shown)


def pytest_configure(config):
    # The kernels nbval starts inherit this process's environment.
    os.environ[CACHE_ENV] = "only"  # the check never computes: a missing result is an error
    os.environ.setdefault(RESULTS_ENV, str(ROOT / "results"))
    use_default_data_root()
    config._book_failures = {}


def pytest_ignore_collect(collection_path, config):
    # the runner's .PAGE.running.ipynb of a page being executed is not a page
    if collection_path.name.startswith(".") and collection_path.suffix == ".ipynb":
        return True
    return None


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        page = _page(item)
        if page is None:
            continue
        item._book_page = page
        item.options["check"] = True  # every cell is compared, marked or not
        notebook = item.parent
        if not getattr(notebook, "_book_ready", False):
            notebook._book_refused = _refusal(notebook, *page)
            notebook.skip_compare = tuple(notebook.skip_compare) + FIGURE_KEYS
            # the file's patterns (if any) are added after these at the notebook's setup
            notebook.sanitize_patterns.update(PATTERNS)
            notebook._book_ready = True
        item.compare_outputs = functools.partial(_compare, item, item.compare_outputs)


def _refusal(notebook, name: str, profile: str, shown: str) -> str | None:
    """Why a page must not be executed at all (None if it may): its code is not what the
    registry and its template give it (`verify.drift_problems`)."""
    nb = notebook.nb
    page = ExecutedPage(name, Path(str(notebook.fspath)), profile,
                        dict(nb.metadata.get("iteration_order", {}).get("parameters", {})), nb)
    try:
        problems = drift_problems(page) or prose_problems(page)
    except Exception as err:  # noqa: BLE001 - a page that cannot be checked is not run either
        problems = [f"{shown}: cannot be checked against the registry "
                    f"({type(err).__name__}: {err})"]
    if not problems:
        return None
    return (f"{shown} (page {name}, profile {profile}) is refused, none of its cells is "
            f"executed: " + "; ".join(problems))


def _compare(item, compare, test, ref, skip_compare=None):
    """nbval's comparison, after dropping streams that the masks leave empty (a cell that only
    logged a computation against the same cell loaded from the cache)."""
    def kept(outputs):
        return [o for o in outputs
                if o.get("output_type") != "stream" or item.sanitize(o.get("text", ""))]
    return compare(kept(test), kept(ref), skip_compare)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    # before the default setup, which starts the page's kernel: a refused page runs nothing
    refused = getattr(item.parent, "_book_refused", None)
    if getattr(item, "_book_page", None) and refused:
        if not getattr(item.parent, "_book_refusal_reported", False):
            item.parent._book_refusal_reported = True
            pytest.fail(refused, pytrace=False)
        pytest.skip("not run: the page is refused (see its first cell)")
    broken = getattr(item.parent, "_book_broken", None)
    if getattr(item, "_book_page", None) and broken:
        pytest.skip(f"not run: {broken}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "_book_page", None)
    if page is None or not report.failed or call.when != "call":
        return
    name, profile, path = page
    text = str(report.longrepr)
    command = rerun_command(name, profile)
    if "MissingResultError" in text:
        why = "loads results the cache lacks (missing, stale or unreadable)"
        advice = (f"{path} (page {name}, profile {profile}) {why}; this check never computes. "
                  f"Recompute them and re-execute the page: {command}, then commit {path} and "
                  f"the new files in results/ (python -m iteration_order.book verify lists every "
                  f"missing result).")
        item.parent._book_broken = f"{item.name} of {path} {why}"
    elif "Cell outputs differ" in text:
        why = f"{item.name}'s outputs differ from the stored ones"
        advice = (f"{path} (page {name}, profile {profile}): {why}: the page no longer follows "
                  f"from the committed results and the current code. If the change is meant, "
                  f"re-execute the page: {command} (its trajectories are loaded from results/, "
                  f"so this takes seconds unless the code that computes them changed), and "
                  f"commit {path}.")
    else:
        why = f"{item.name} raised an error"
        advice = (f"{path} (page {name}, profile {profile}): {why} when re-executed from the "
                  f"committed results: the page no longer runs with the current code. Re-execute "
                  f"it: {command} (if that fails too, the template or the code needs a fix), and "
                  f"commit {path}.")
        item.parent._book_broken = f"{item.name} of {path} raised an error"
    report.longrepr = f"{text}\n\n{advice}"
    item.config._book_failures.setdefault((path, name, profile), []).append(why)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    failures = getattr(config, "_book_failures", {})
    if not failures:
        return
    terminalreporter.section("book pages that no longer follow from results/ and the code")
    for (path, name, profile), whys in failures.items():
        terminalreporter.write_line(f"{path} (page {name}, profile {profile}): {'; '.join(whys)}")
        terminalreporter.write_line(f"  re-execute: {rerun_command(name, profile)}")
