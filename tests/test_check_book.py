"""The book check (`make check-book`): `verify`, then every page re-run cache-only by nbval.

A smoke page is executed into a temporary book with its own results folder; the check passes on
it, fails when a stored number (a glued value, a table cell) is changed, ignores a changed figure
by design, and, when a result is missing, fails naming the page, the config and the command that
recomputes it — without computing anything.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from iteration_order.book import cli, runner
from iteration_order.book.nbcheck import FIGURE_KEYS, sanitise
from iteration_order.book.registry import ROOT
from iteration_order.book.verify import (drift_problems, executed_pages, loaded_results,
                                          profile_folders,
                                          rerun_command, verify_book)
from iteration_order.cost import format_seconds

PAGE = "fig04-x2"  # an orders page: 2 seeds x 2 orders of a 2x32 MLP for 60 steps at smoke
COMMAND = rerun_command(PAGE, "smoke")


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """(book folder, results folder) holding PAGE executed at the smoke profile."""
    tmp = tmp_path_factory.mktemp("book-check")
    book, results = tmp / "book", tmp / "results"
    book.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ITERATION_ORDER_RESULTS", str(results))
        mp.delenv("ITERATION_ORDER_CACHE", raising=False)  # executing computes the runs
        mp.setattr(runner, "BOOK", book)
        mp.setattr(runner, "LOGS", tmp / "logs")
        runner.execute_page(PAGE, "smoke", jobs=1, force=True)
    return book, results


def run_check(results: Path, *notebooks: Path) -> subprocess.CompletedProcess:
    """The nbval half of `make check-book` on ``notebooks``, reading ``results``."""
    env = {**os.environ, "ITERATION_ORDER_RESULTS": str(results)}
    env.pop("ITERATION_ORDER_CACHE", None)  # the plugin must set 'only' itself
    for name in ("CI", "BUILD_NUMBER"):  # pytest prints whole messages in its summary under CI
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "iteration_order.book.nbcheck", "--nbval",
         "--nbval-current-env", "-p", "no:cacheprovider", "--color=no", "-q", "-rfEs",
         *map(str, notebooks)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def copy_page(book: Path, folder: Path, change=None) -> Path:
    """The executed page copied into ``folder`` (same file name), with ``change(nb)`` applied."""
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(book / f"{PAGE}.ipynb", as_version=4)
    if change is not None:
        change(nb)
    nbformat.write(nb, folder / f"{PAGE}.ipynb")
    return folder / f"{PAGE}.ipynb"


def outputs(nb):
    return [o for cell in nb.cells for o in cell.get("outputs", [])]


def change_glued_number(nb) -> None:
    """The first glued float a reader sees in the conclusion, given another value."""
    for o in outputs(nb):
        value = o.get("data", {}).get("application/papermill.record/text/plain", "")
        if re.fullmatch(r"-?\d+\.\d+", value):
            o["data"]["application/papermill.record/text/plain"] = f"{float(value) + 0.01!r}"
            return
    raise AssertionError("the page glues no float")


def change_table_cell(nb) -> None:
    """One number of the first HTML table changed in its last digit."""
    for o in outputs(nb):
        html = o.get("data", {}).get("text/html")
        match = re.search(r"<td>(-?\d+\.\d*[0-8])</td>", html or "")
        if match:
            bumped = match.group(1)[:-1] + str(int(match.group(1)[-1]) + 1)
            o["data"]["text/html"] = html[:match.start(1)] + bumped + html[match.end(1):]
            return
    raise AssertionError("the page shows no table with a decimal number")


def change_figure(nb) -> None:
    """The glued figure's PNG bytes changed (another machine's fonts would do the same)."""
    for o in outputs(nb):
        data = o.get("data", {})
        key = "application/papermill.record/image/png"
        if key in data:
            data[key] = data[key][:-40] + "A" * 40
            return
    raise AssertionError("the page glues no figure")


# ------------------------------------------------------------------------------------------------
# Fast: the masks
# ------------------------------------------------------------------------------------------------

def test_masks_drop_the_computation_log_and_keep_the_numbers():
    log = (f"0 of 4 runs cached; to run:\n"
           f"order                   runs  map applications  evaluations  est. time\n"
           f"forward                    2               120          122    0:00:02\n"
           f"estimated wall time with 1 parallel job(s): {format_seconds(3)}\n"
           f"[1/4] forward seed 0 done after 0:00:01; about 0:00:02 left\n"
           f"[2/4, 1 failed] backward seed 0 done after 0:00:01; about 0:00:00 left\n")
    kept = "synthetic-x2: 101 points\n4 trajectories, 0.3 min of compute in all\n"
    assert sanitise(log + kept) == sanitise(kept) == \
        "synthetic-x2: 101 points\n4 trajectories, N min of compute in all\n"
    assert sanitise("0 of 2 runs cached; to run:\n(no cost estimate: ValueError: x)\n") == ""
    stale = ("/x/site-packages/iteration_order/cache.py:311: StaleResultWarning: '/r/a.json': "
             "the file is empty; recomputing it\n  found = read_valid(path)\nnext\n")
    assert sanitise(stale) == "next\n"
    deprecated = ("/venv/lib/python3.11/site-packages/torch/jit/_script.py:1491: FutureWarning: "
                  "`torch.jit.script` is deprecated.\n  warnings.warn(\n")
    assert sanitise(deprecated) == ""
    provenance = ("package iteration-order 0.1.0 at commit `0123456789ab with uncommitted "
                  "changes`; Python 3.11.9, torch 2.14.1+cu130 (x86_64); runs: 4 computed on "
                  "cpu with the batched engine (torch 2.14.1+cu130).")
    assert sanitise(provenance) == (
        "package iteration-order 0.1.0 at commit `COMMIT`; Python VERSION, torch VERSION "
        "(MACHINE); runs: 4 computed on cpu with the batched engine (torch 2.14.1+cu130).")
    assert sanitise("read '/work/book/results/ab-cpu.json' on 2026-11-30 03:42:04") == \
        "read 'PATH' on DATE"
    # what a reader reads as numbers, units and markup is never masked
    for text in ("λ_max / (2/h) = 0.4", "1/h²", "<td>0.0807</td></tr>", "ratio 0.15 (3 of 5)",
                 "https://arxiv.org/abs/2502.01557", "steps 1050–1400"):
        assert sanitise(text) == text


def test_glued_figures_are_not_compared_but_their_captions_are():
    assert "application/papermill.record/image/png" in FIGURE_KEYS
    assert not any(key.endswith(("text/plain", "text/markdown", "text/html"))
                   for key in FIGURE_KEYS)


# ------------------------------------------------------------------------------------------------
# Slow: a page executed, then checked
# ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_verify_accepts_a_freshly_executed_page(smoke_book):
    book, results = smoke_book
    assert verify_book(book, results_dir=results) == ([], [])


@pytest.mark.slow
def test_verify_names_drift_from_the_registry_and_the_template(smoke_book, tmp_path):
    book, _ = smoke_book

    def other_parameters(nb):
        nb.metadata["iteration_order"]["parameters"]["steps"] = 61

    def other_code(nb):
        code = [c for c in nb.cells if c.cell_type == "code"
                and "stability_table(" in c.source][0]
        code.source = code.source.replace("display_table(table)", "display_table(table, 2)")

    for change, words in ((other_parameters, "other parameters than experiments.yml gives it "
                           "now (steps)"), (other_code, "cells differ from notebooks/orders")):
        copy_page(book, tmp_path / change.__name__, change)
        (page,), problems = executed_pages(tmp_path / change.__name__)
        assert problems == []
        found = drift_problems(page)
        assert len(found) == 1 and words in found[0] and COMMAND in found[0], found


@pytest.mark.slow
def test_check_passes_on_the_page_and_fails_on_a_changed_stored_number(smoke_book, tmp_path):
    book, results = smoke_book
    # two pages in one run (a kernel each): one with a glued number and a table cell changed, one
    # with only its figure changed, which passes like the unchanged page: figures are skipped
    changed = copy_page(book, tmp_path / "changed",
                        lambda nb: (change_glued_number(nb), change_table_cell(nb)))
    figure = copy_page(book, tmp_path / "figure", change_figure)
    done = run_check(results, changed, figure)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    failed = re.findall(r"^FAILED (\S+)::Cell (\d+)", out, flags=re.M)
    assert [Path(path).parent.name for path, _ in failed] == ["changed", "changed"], out
    code = [c for c in nbformat.read(changed, as_version=4).cells if c.cell_type == "code"]
    shown = [k for k, c in enumerate(code) if "display(display_table(table" in c.source]
    glued = [k for k, c in enumerate(code) if "page_numbers(" in c.source]
    assert sorted(int(cell) for _, cell in failed) == sorted(shown + glued), out
    assert "mismatch 'application/papermill.record/text/plain'" in out
    assert "mismatch 'text/html'" in out
    # once per failed cell in the failure reports (the short summary may repeat it, by terminal)
    reports = out.split("short test summary info")[0]
    assert reports.count(f"re-execute the page: {COMMAND}") == 2, out
    # every other cell passed: the rest of the changed page, and all of the figure's
    assert f"2 failed, {2 * len(code) - 2} passed" in out, out


@pytest.mark.slow
def test_check_fails_on_a_missing_result_naming_page_config_and_command(smoke_book, tmp_path,
                                                                        monkeypatch):
    book, results = smoke_book
    partial = tmp_path / "results"
    shutil.copytree(results, partial)
    gone = sorted(partial.glob("*.json"))[0]
    gone.unlink()

    problems, _ = verify_book(book, results_dir=partial)
    assert len(problems) == 1
    assert f"{PAGE}.ipynb (profile smoke): 1 of 4 results" in problems[0]
    assert "no valid result for TrajectoryConfig(" in problems[0] and gone.name in problems[0]
    assert problems[0].endswith(COMMAND)
    # the command line: the same report, and a non-zero exit
    monkeypatch.setattr(runner, "BOOK", book)
    monkeypatch.setenv("ITERATION_ORDER_RESULTS", str(partial))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["verify"])
    assert "1 problem(s)" in str(exit_.value.code)

    before = sorted(p.name for p in partial.iterdir())
    done = run_check(partial, book / f"{PAGE}.ipynb")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "MissingResultError" in out and gone.name in out
    assert f"(page {PAGE}, profile smoke) loads results the cache lacks" in out
    assert COMMAND in out
    assert re.search(r"1 failed, \d+ passed, \d+ skipped", out), out  # later cells not run
    assert sorted(p.name for p in partial.iterdir()) == before  # nothing was computed


def test_make_test_runs_the_book_check():
    makefile = (ROOT / "Makefile").read_text()
    test_target = re.search(r"^test:(.*)$", makefile, flags=re.M).group(1).split()
    assert "check-book" in test_target
    recipe = makefile.split("\ncheck-book:")[1].split("\n\n")[0]
    assert "iteration_order.book verify" in recipe
    assert "-p iteration_order.book.nbcheck --nbval " in recipe and " book" in recipe


def test_every_committed_result_is_loaded_by_an_executed_page(monkeypatch):
    """results/ holds what the published pages load and nothing stale (issue 13: compact); and
    `verify`'s loaders name every file a page reads, or the file would show up here as unused
    (the stationary page's replicates once did)."""
    import builtins
    import io

    results = (ROOT / "results").resolve()
    read, real_open = set(), builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            read.add(Path(file).resolve())
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)  # what pathlib's read_text and read_bytes call
    for folder in profile_folders(ROOT / "book"):  # book/ and book/paper/
        pages, problems = executed_pages(folder)
        assert problems == []
        for page in pages:
            for _, load in loaded_results(page, results) or []:
                load()
    # the pages computed here ran on the CPU, at the cpu profile in book/ and at the paper
    # profile in book/paper/ (Figures 4-6): their results are the -cpu files (a GPU's -cuda files
    # would belong to paper pages rendered from them); the benchmark's report is no trajectory
    stored = {p.resolve() for p in committed_results(results)
              if p.name.endswith("-cpu.json") and "logs" not in p.parts
              and not p.name.startswith("bench-")}
    assert sorted(p.relative_to(results).as_posix() for p in stored - read) == []


def committed_results(results: Path) -> list[Path]:
    """The files of ``results`` that git tracks: a rerun by hand (papermill, a script) adds its
    own runs there as untracked files, which the book does not load and this test must not judge
    (README: Rerunning a page by hand). Outside a git checkout, every file."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "."], cwd=results,
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in results.rglob("*") if p.is_file()]
    return [results / name for name in listed.decode().split("\0") if name]
