"""The book check covers the whole book, and never executes what the registry did not render
(issue 21, item 3): `verify` reads every profile folder (book/ and book/paper/), and checks each
page's injected-parameters cell against the registry; the nbval half refuses such a page before
its kernel starts."""
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from iteration_order.book.registry import ROOT
from iteration_order.book.verify import (all_executed_pages, drift_problems, prose_problems,
                                          parameters_cell_problems, verify_book)

# a committed cpu page with no paper-profile sibling: a copy of it alone is a whole book (a
# page with one links to it, and that link is checked against the book the copy is in)
PAGE = "momentum-x2"


def _copy(folder: Path, change=None, name: str = PAGE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    if change is not None:
        change(nb)
    nbformat.write(nb, folder / f"{name}.ipynb")
    return folder / f"{name}.ipynb"


def _injected(nb):
    return next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))


def _page(path):
    (page,), problems = all_executed_pages(path.parent)
    assert problems == []
    return page


def test_every_committed_page_has_the_parameters_cell_the_registry_renders():
    pages, problems = all_executed_pages(ROOT / "book")
    assert problems == [] and pages
    assert [p for page in pages for p in parameters_cell_problems(page)] == []


def test_a_bogus_paper_page_is_read_and_refused(tmp_path):
    book = tmp_path / "book"
    _copy(book)

    def paper_lr(nb):
        nb.metadata["iteration_order"].update(profile="paper")
        nb.metadata["iteration_order"]["parameters"]["lr"] = 123
        _injected(nb).source = _injected(nb).source.replace('profile = "cpu"',
                                                            'profile = "paper"')
    _copy(book / "paper", paper_lr)
    problems, _ = verify_book(book, only=[PAGE], results_dir=ROOT / "results")
    shown = [p for p in problems if "paper" in p or "(profile paper)" in p]
    assert any("executed with other parameters than experiments.yml gives it now (" in p
               and "lr" in p for p in shown), problems
    assert any("injected-parameters cell is not what experiments.yml renders" in p
               for p in shown), problems


def test_a_page_in_the_wrong_profile_folder_is_reported(tmp_path):
    book = tmp_path / "book"
    _copy(book / "paper")  # a cpu page under paper/
    pages, problems = all_executed_pages(book)
    assert len(pages) == 1
    assert any("executed at profile 'cpu' but stored in" in p for p in problems), problems


def _os_system(marker: Path):
    def change(nb):
        _injected(nb).source += f'\nimport os; os.system("touch {marker}")\n'
    return change


def test_an_added_line_in_the_parameters_cell_fails_verify(tmp_path):
    path = _copy(tmp_path / "book", _os_system(tmp_path / "ran"))
    found = drift_problems(_page(path))
    assert len(found) == 1, found
    assert "injected-parameters cell is not what experiments.yml renders for it (line 18: " \
           "'import os; os.system(" in found[0]


def test_a_code_cell_tagged_as_the_runners_header_fails_verify(tmp_path):
    def header_code(nb):
        header = next(c for c in nb.cells if "page-header" in c.metadata.get("tags", []))
        cell = nbformat.v4.new_code_cell('print("unchecked")')
        cell.metadata["tags"] = list(header.metadata["tags"])
        nb.cells.insert(1, cell)
    path = _copy(tmp_path / "book", header_code)
    found = drift_problems(_page(path))
    assert any("is tagged ['page-header'] as the runner's decoration but is not markdown" in p
               for p in found), found


@pytest.mark.slow
def test_the_nbval_half_refuses_a_page_with_an_edited_parameters_cell_without_running_it(
        tmp_path):
    marker = tmp_path / "ran"
    path = _copy(tmp_path / "book", _os_system(marker))
    env = {**os.environ, "ITERATION_ORDER_RESULTS": str(ROOT / "results")}
    env.pop("ITERATION_ORDER_CACHE", None)
    for name in ("CI", "BUILD_NUMBER"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "iteration_order.book.nbcheck", "--nbval",
         "--nbval-current-env", "-p", "no:cacheprovider", "--color=no", "-q", "-rfEs",
         str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "is refused, none of its cells is executed" in out, out
    assert "injected-parameters cell is not what experiments.yml renders" in out, out
    # the first cell errors at its setup (before the kernel starts), the others are skipped
    assert re.search(r"\d+ skipped, 1 error in", out) and " passed" not in out, out
    assert not marker.exists()  # the added line never ran


def _edit_tagged(tag, old_new=None):
    def change(nb):
        cell = next(c for c in nb.cells if tag in c.metadata.get("tags", []))
        if old_new is None:  # the last word of its second paragraph replaced
            words = cell.source.split(" ")
            words[-3] = "noisier" if words[-3] != "noisier" else "steadier"
            cell.source = " ".join(words)
        else:
            assert old_new[0] in cell.source
            cell.source = cell.source.replace(*old_new, 1)  # the first: the where sentence
    return change


@pytest.mark.parametrize("tag, what", [("page-header", "header"),
                                       ("page-conclusion", "conclusion")])
def test_edited_header_or_conclusion_prose_fails_verify(tmp_path, tag, what):
    book = tmp_path / "book"
    _copy(book, _edit_tagged(tag))
    problems, _ = verify_book(book, results_dir=ROOT / "results")
    assert len(problems) == 1, problems
    assert f"its {what} is not what experiments.yml gives it now" in problems[0]
    assert f"--only {PAGE}" in problems[0]


def test_every_committed_page_has_the_prose_the_registry_renders():
    pages, _ = all_executed_pages(ROOT / "book")
    assert [p for page in pages for p in prose_problems(page)] == []


def test_the_machine_and_wall_time_sentence_is_not_compared(tmp_path):
    book = tmp_path / "book"
    _copy(book, _edit_tagged("page-header", (" (2 cores)", " (64 cores)")))
    problems, _ = verify_book(book, results_dir=ROOT / "results")
    assert problems == []


def test_a_link_to_a_sibling_missing_from_the_book_fails_verify(tmp_path):
    """fig04-x2's cpu page links to its paper-profile page; copied into a book without that page,
    the link points nowhere, and verify says the header is not what the registry gives it."""
    book = tmp_path / "book"
    _copy(book, name="fig04-x2")
    problems, _ = verify_book(book, results_dir=ROOT / "results")
    assert len(problems) == 1 and "its header is not what experiments.yml gives it now" \
        in problems[0], problems
    (book / "paper").mkdir()
    paper = nbformat.read(ROOT / "book" / "paper" / "fig04-x2.ipynb", as_version=4)
    nbformat.write(paper, book / "paper" / "fig04-x2.ipynb")
    assert verify_book(book, results_dir=ROOT / "results")[0] == []
