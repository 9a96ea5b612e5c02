"""Does every executed page still follow from the registry, its template and the results cache?

``python -m iteration_order.book verify`` checks, without executing anything, each page in
every profile folder (``book/`` and ``book/paper/``; its profile is the one in its metadata,
``metadata.iteration_order.profile``, and must be the folder's):

* it is a page of ``experiments.yml`` and was executed with the parameters the registry gives it
  now at that profile;
* its injected-parameters cell is exactly what papermill renders from those parameters
  (`parameters_cell_problems`), and the cells the runner adds (header, conclusion) are markdown:
  the book check's second half (nbval) executes a page's code, so a page whose code is not the
  registry's and the template's is refused before anything runs (`nbcheck` applies the same
  check);
* its cells are those of its template now (code and markdown alike, the runner's decoration
  aside): the book check re-runs a page's *own* code, so a page executed from an older template
  would otherwise still pass;
* its header and conclusion are what the runner renders from the registry now
  (`prose_problems`: claim, title, departures, parameters and conclusion word for word; the
  sentence naming the machine and the wall time aside);
* every result it loads (trajectories, Hessian probes, Appendix C's and Theorem 2.6's studies) is
  stored and valid for the current code: read with the cache in mode ``only``, so a missing,
  stale (fingerprint) or unreadable file is reported — with the page, the config, the file, the
  reason and the command that recomputes it — and never recomputed.

It is the fast first half of ``make check-book``; the second half re-executes every page from the
cache and compares its outputs with the stored ones (`iteration_order.book.nbcheck`). The results
a page loads come from its template's study (`studies.page_loads`), built by the same
`page_setup` the template's cell calls: this module holds no copy of any template's setup.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..cache import RESULTS_ENV, MissingResultError
from .registry import (ROOT, RegistryError, checked_parameters, load_pages, parameters,
                       template_defaults, template_path)
from .runner import NBVAL_MARKER  # stripped from pages' code by the runner (runner._decorate)
from .runner import PAPER_DIR

__all__ = ["ExecutedPage", "executed_pages", "rerun_command", "drift_problems", "loaded_results",
           "cache_problems", "verify_book", "page_cells", "RUNNER_TAGS",
           "profile_folders", "parameters_cell_problems", "restamp_results", "prose_problems"]

# Cells the runner adds to a page (header, conclusion) and papermill's injected parameters: not
# part of the template. The template's own cells tagged template-only are dropped from pages.
RUNNER_TAGS = {"page-header", "page-conclusion", "injected-parameters"}


def rerun_command(name: str, profile: str) -> str:
    """What recomputes a page's missing results and re-executes it. ``--force``: a page whose
    template, parameters and code are unchanged is otherwise skipped as up to date, even when
    its results are gone from the cache."""
    return f"python -m iteration_order.book run --profile {profile} --only {name} --force"


@dataclass(frozen=True)
class ExecutedPage:
    name: str
    path: Path
    profile: str
    parameters: dict  # what the runner passed (the page's metadata), runtime parameters aside
    notebook: nbformat.NotebookNode = dataclasses.field(repr=False, compare=False)

    @property
    def command(self) -> str:
        return rerun_command(self.name, self.profile)


def profile_folders(book: Path) -> list[Path]:
    """The folders of executed pages: ``book`` itself (cpu and smoke pages) and ``book/paper``
    (`runner.page_path`)."""
    return [Path(book), Path(book) / PAPER_DIR]


def _folder_profile_problem(page: ExecutedPage, book: Path) -> str | None:
    in_paper = page.path.parent == Path(book) / PAPER_DIR
    if in_paper != (page.profile == "paper"):
        return (f"{page.path}: executed at profile {page.profile!r} but stored in "
                f"{page.path.parent}; pages of the paper profile are in {PAPER_DIR}/, the others "
                f"beside it: re-execute it: {page.command}")
    return None


def executed_pages(book: Path, only: list[str] | None = None, report_missing: bool = True
                   ) -> tuple[list[ExecutedPage], list[str]]:
    """The executed pages in ``book`` (all ``*.ipynb``; ``only``: those named), and a problem for
    each notebook that is not a readable executed page (and, with ``report_missing``, for each
    page of ``only`` not found)."""
    pages, problems = [], []
    # not the runner's .PAGE.running.ipynb of a page being executed
    found = sorted(p for p in Path(book).glob("*.ipynb") if not p.name.startswith("."))
    if report_missing:
        problems += [f"{Path(book) / name}.ipynb: no such executed page"
                     for name in sorted(set(only or []) - {path.stem for path in found})]
    for path in found:
        if only and path.stem not in only:
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # noqa: BLE001 - any unreadable notebook is reported
            problems.append(f"{path}: cannot be read as a notebook ({type(err).__name__}: {err})")
            continue
        meta = nb.metadata.get("iteration_order", {})
        if not meta.get("page") or not meta.get("profile"):
            problems.append(f"{path}: no metadata.iteration_order page and profile: not executed "
                            f"by the runner (python -m iteration_order.book run)")
            continue
        if meta["page"] != path.stem:
            problems.append(f"{path}: its metadata names page {meta['page']!r}, not {path.stem!r}")
            continue
        pages.append(ExecutedPage(path.stem, path, meta["profile"],
                                  dict(meta.get("parameters", {})), nb))
    return pages, problems


# ------------------------------------------------------------------------------------------------
# The page against the registry and its template
# ------------------------------------------------------------------------------------------------

def page_cells(nb) -> list[tuple[str, str]]:
    """(cell type, source) of a page's cells that come from its template, as the runner writes
    them (nbval markers stripped from code); for a template, the cells a page would hold."""
    cells = []
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if tags & RUNNER_TAGS or "template-only" in tags:
            continue
        source = cell.source
        if cell.cell_type == "code":
            source = "\n".join(line for line in source.split("\n") if line.strip() != NBVAL_MARKER)
        cells.append((cell.cell_type, source))
    return cells


def parameters_cell_problems(page: ExecutedPage) -> list[str]:
    """Why the code papermill injected into a page is not exactly what the registry renders for
    it now (empty if it is): one ``injected-parameters`` code cell whose source is papermill's
    rendering of the page's registry parameters at its profile, ``jobs`` and ``profile``; and
    the cells the runner adds (header, conclusion) are markdown, never code. Reads only."""
    from papermill.translators import translate_parameters

    where = f"{_shown(page.path)} (profile {page.profile})"
    tagged = [(cell, set(cell.metadata.get("tags", []))) for cell in page.notebook.cells]
    injected = [cell for cell, tags in tagged if "injected-parameters" in tags]
    problems = [f"{where}: a {cell.cell_type} cell is tagged {sorted(tags & RUNNER_TAGS)} as the "
                f"runner's decoration but is not markdown; it would be executed unchecked"
                for cell, tags in tagged
                if tags & (RUNNER_TAGS - {"injected-parameters"}) and cell.cell_type != "markdown"]
    if len(injected) != 1 or injected[0].cell_type != "code":
        return problems + [f"{where}: {len(injected)} injected-parameters cells, not one code cell"]
    try:
        wanted = checked_parameters(page.name, page.profile)
    except (ValueError, RegistryError) as err:
        return problems + [f"{where}: {err}"]
    jobs = page.notebook.metadata.get("papermill", {}).get("parameters", {}).get("jobs")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        return problems + [f"{where}: papermill's metadata gives jobs={jobs!r}, not a number of "
                           f"jobs"]
    rendered = translate_parameters("python3", "python",
                                    {**wanted, "jobs": jobs, "profile": page.profile,
                                     "page": page.name},
                                    "Parameters")
    if injected[0].source.strip() != rendered.strip():
        # the first line that differs, blank lines aside (to name an added line, not a gap)
        mine, theirs = ([line for line in text.split("\n") if line.strip()]
                        for text in (injected[0].source, rendered))
        first = next((k for k, (a, b) in enumerate(zip(mine, theirs)) if a != b),
                     min(len(mine), len(theirs)))
        line = mine[first] if first < len(mine) else "(missing)"
        problems.append(f"{where}: its injected-parameters cell is not what experiments.yml "
                        f"renders for it (line {first + 1}: {line[:80]!r}); the page is not "
                        f"executed by the book check: re-execute it: {page.command}")
    return problems


# The one sentence of a header that names the machine and the wall time of an execution: not
# re-rendered from the page (another machine renders another name; the stored wall time is
# rounded). Everything else of the header and the conclusion is.
_WHERE = re.compile(r"(\*\*Profile:\*\* `[^`\n]*`\.)[^\n]*")


def prose_problems(page: ExecutedPage) -> list[str]:
    """Why a page's header or conclusion is not what the runner renders for it now from the
    registry (empty if it is): the claim, title, departures, parameters and conclusion are
    compared word for word, the machine and wall-time sentence aside. Reads only."""
    from .runner import _conclusion, _glues, _header, book_root

    where = f"{_shown(page.path)} (profile {page.profile})"
    meta = page.notebook.metadata.get("iteration_order", {})
    try:
        wall = float(meta.get("wall_seconds", 0.0))
        header = _header(page.name, page.profile, parameters(page.name, page.profile), wall,
                         str(meta.get("executed_on")),
                         produced_by=_glues(page.notebook, "provenance"),
                         rendered_from=meta.get("rendered_from"),
                         book=book_root(page.path, page.profile))  # its sibling, if any, there
        conclusion = _conclusion(page.name, page.profile)
    except (ValueError, TypeError, RegistryError) as err:
        return [f"{where}: its header cannot be rendered from experiments.yml ({err})"]
    problems = []
    for tag, wanted in (("page-header", header), ("page-conclusion", conclusion)):
        found = [c.source for c in page.notebook.cells if tag in c.metadata.get("tags", [])]
        if [_WHERE.sub(r"\1", f) for f in found] != [_WHERE.sub(r"\1", wanted)]:
            what = "header" if tag == "page-header" else "conclusion"
            first = _first_line_differing(found[0] if len(found) == 1 else "", wanted)
            problems.append(f"{where}: its {what} is not what experiments.yml gives it now "
                            f"({len(found)} {tag} cell(s); first difference: {first!r}); refresh "
                            f"it: python -m iteration_order.book run --profile {page.profile} "
                            f"--only {page.name} (an up-to-date page only has its prose "
                            f"re-rendered)")
    return problems


def _first_line_differing(mine: str, theirs: str) -> str:
    a, b = _WHERE.sub(r"\1", mine).split("\n"), _WHERE.sub(r"\1", theirs).split("\n")
    for x, y in zip(a, b):
        if x != y:
            return x[:100]
    return (a[len(b)] if len(a) > len(b) else "(missing)")[:100]


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def drift_problems(page: ExecutedPage) -> list[str]:
    """Why a page no longer matches the registry or its template (empty if it does)."""
    where = f"{page.path.name} (profile {page.profile})"
    if page.name not in load_pages():
        return [f"{where}: not a page of experiments.yml; remove it or add it to the registry"]
    try:
        wanted = parameters(page.name, page.profile)
    except (ValueError, RegistryError) as err:
        return [f"{where}: {err}"]
    problems = parameters_cell_problems(page)
    if page.parameters != wanted:
        changed = sorted(k for k in page.parameters.keys() | wanted.keys()
                         if page.parameters.get(k) != wanted.get(k))
        problems.append(f"{where}: executed with other parameters than experiments.yml gives it "
                        f"now ({', '.join(changed)}); re-execute it: {page.command}")
    template = template_path(page.name)
    mine, theirs = page_cells(page.notebook), page_cells(nbformat.read(template, as_version=4))
    if mine != theirs:
        problems.append(f"{where}: its cells differ from notebooks/{template.name} "
                        f"({_first_difference(mine, theirs)}); it was executed from another "
                        f"version of the template: re-execute it: {page.command}")
    return problems


def figure_problems(page: ExecutedPage) -> list[str]:
    """Why a page's stored figures are not the ones its execution drew (empty if they are): each
    glued PNG must match the ``<key>__png`` digest glued beside it when it was drawn
    (`display.glue`), so that an image replaced in the notebook is caught without redrawing it.
    What the figure plots is compared on the re-run through ``<key>__data``."""
    from .display import PNG_DIGEST, png_digest

    glue = "application/papermill.record/"
    figures, digests = {}, {}
    for cell in page.notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            data = output.get("data", {})
            if name and glue + "image/png" in data:
                figures[name] = data[glue + "image/png"]
            elif name and name.endswith(PNG_DIGEST):
                digests[name[:-len(PNG_DIGEST)]] = str(data.get(glue + "text/plain", "")).strip("'")
    where = f"{page.path.name} (profile {page.profile})"
    problems = []
    for name, png in figures.items():
        if name not in digests:
            problems.append(f"{where}: figure {name!r} has no digest glued beside it; re-execute "
                            f"it: {page.command}")
        elif png_digest(png if isinstance(png, str) else "".join(png)) != digests[name]:
            problems.append(f"{where}: the stored image of figure {name!r} is not the one its "
                            f"execution drew (its PNG digest differs); re-execute it: "
                            f"{page.command}")
    return problems


def _first_difference(mine: list, theirs: list) -> str:
    for k, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            first = (b[1].strip().split("\n") or [""])[0][:60]
            return f"template cell {k} ({b[0]}, starting {first!r}) differs"
    return f"the page has {len(mine)} template cells, the template {len(theirs)}"


# ------------------------------------------------------------------------------------------------
# The results each template loads
# ------------------------------------------------------------------------------------------------

def loaded_results(page: ExecutedPage, results_dir: Path) -> list:
    """What the page loads from ``results_dir``, each as ``(what, read)``, a read that raises
    `MissingResultError` when the result is missing or invalid: its template's study says
    (`studies.page_loads`, from the same `page_setup` the template's cell calls)."""
    from ..trajectory import Runtime
    from .studies import page_loads
    template = load_pages()[page.name]["template"]
    values = {**template_defaults(template_path(page.name)), **page.parameters,
              "profile": page.profile, "page": page.name}
    runtime = Runtime(cache="only", progress=False, threads=1, results_dir=Path(results_dir))
    return page_loads(template, values, runtime)


def cache_problems(page: ExecutedPage, results_dir: Path) -> list[str]:
    """The results the page loads that are not stored and valid in ``results_dir``: one problem
    for the page, naming each (config, file, reason) and the command that recomputes them."""
    loads = loaded_results(page, results_dir) or []
    lacking = []
    for what, load in loads:
        try:
            load()
        except MissingResultError as err:
            lacking.append(f"  - {err}")
    if not lacking:
        return []
    return [f"{page.path.name} (profile {page.profile}): {len(lacking)} of {len(loads)} results "
            f"it loads are missing, stale or unreadable in {results_dir}:\n" + "\n".join(lacking)
            + f"\n  recompute them and re-execute the page: {page.command}"]


def all_executed_pages(book: Path, only: list[str] | None = None
                       ) -> tuple[list[ExecutedPage], list[str]]:
    """The executed pages of every profile folder of ``book`` (`profile_folders`), and the
    problems of reading them (a page in the wrong folder for its profile included)."""
    pages, problems = [], []
    for folder in profile_folders(book):
        if folder.is_dir():
            found, trouble = executed_pages(folder, only, report_missing=False)
            pages += found
            problems += trouble
    problems += [f"{Path(book) / name}.ipynb: no such executed page"
                 for name in sorted(set(only or []) - {page.name for page in pages})]
    problems += [p for p in (_folder_profile_problem(page, book) for page in pages) if p]
    return pages, problems


def restamp_results(book: Path | None = None, results_dir: Path | None = None
                    ) -> tuple[list[Path], list[Path], list[Path]]:
    """Add the content digest (`cache.DIGEST_KEY`) to the results written before digests existed,
    certifying nothing that was not already provable: every result each executed page (of every
    profile folder) loads is read as `verify` reads it (cache mode ``only``: config equal to the
    page's, fingerprint equal to the current code's, the curves' shape and values, the study's
    own check); a file without a digest that passed every such read and failed none is rewritten
    with its digest, its content otherwise unchanged (`cache.certify_unstamped`).

    Returns (stamped, refused, left): refused files failed a check and stay invalid (recompute
    them); left are result files without a digest that no page loads (left as they are)."""
    import json

    from ..cache import DIGEST_KEY, certify_unstamped
    book = Path(book) if book is not None else ROOT / "book"
    results_dir = Path(results_dir or os.environ.get(RESULTS_ENV)
                       or ROOT / "results")
    pages, _ = all_executed_pages(book)

    def read_all():
        for page in pages:
            if page.name not in load_pages():
                continue
            for _, load in loaded_results(page, results_dir) or []:
                try:
                    load()
                except MissingResultError:
                    pass  # reported by verify; its file is not stamped
    stamped, refused = certify_unstamped(read_all)
    left = []
    for path in sorted(results_dir.rglob("*.json")):
        if "logs" in path.relative_to(results_dir).parts or path.name.startswith("bench-"):
            continue
        try:
            unstamped = DIGEST_KEY not in json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError, AttributeError, TypeError, OSError):
            unstamped = True
        if unstamped and path.resolve() not in refused:
            left.append(path.resolve())
    return stamped, refused, left


def verify_book(book: Path | None = None, only: list[str] | None = None,
                results_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of every executed page in ``book`` (default ``book/``) against the
    registry, its template and the results in ``results_dir`` (default $ITERATION_ORDER_RESULTS,
    else the repository's ``results/``). Reads only: nothing is executed or computed."""
    book = Path(book) if book is not None else ROOT / "book"
    results_dir = Path(results_dir or os.environ.get(RESULTS_ENV)
                       or ROOT / "results")
    pages, problems = all_executed_pages(book, only)
    notes = []
    for page in pages:
        drift = drift_problems(page)
        # the prose of a page that follows the registry otherwise (else the drift says enough)
        problems += drift or prose_problems(page) + figure_problems(page)
        if page.profile not in load_pages().get(page.name, {}).get("profiles", {}):
            continue  # not a page of the registry at this profile: nothing to look up
        problems += cache_problems(page, results_dir)
    return problems, notes
