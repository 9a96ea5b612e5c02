"""Does every executed page still follow from the registry, its template and the results cache?

``python -m iteration_order.book verify`` checks, without executing anything, each page in
``book/`` (its profile is the one in its metadata, ``metadata.iteration_order.profile``):

* it is a page of ``experiments.yml`` and was executed with the parameters the registry gives it
  now at that profile;
* its cells are those of its template now (code and markdown alike, the runner's decoration
  aside): the book check re-runs a page's *own* code, so a page executed from an older template
  would otherwise still pass;
* every result it loads (trajectories, Hessian probes, Appendix C's and Theorem 2.6's studies) is
  stored and valid for the current code: read with the cache in mode ``only``, so a missing,
  stale (fingerprint) or unreadable file is reported — with the page, the config, the file, the
  reason and the command that recomputes it — and never recomputed.

It is the fast first half of ``make check-book``; the second half re-executes every page from the
cache and compares its outputs with the stored ones (`iteration_order.book.nbcheck`). The results
each template loads are listed in `LOADERS`, built the way the template builds them; a template
without an entry is reported as not pre-checked (its page is still re-run cache-only by nbval,
whose failure names the page and the same command).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..cache import MissingResultError
from .registry import ROOT, RegistryError, load_pages, parameters, template_defaults, template_path
from .runner import NBVAL_MARKER  # stripped from pages' code by the runner (runner._decorate)

__all__ = ["ExecutedPage", "executed_pages", "rerun_command", "drift_problems", "loaded_results",
           "cache_problems", "verify_book", "page_cells", "LOADERS", "RUNNER_TAGS"]

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


def executed_pages(book: Path, only: list[str] | None = None
                   ) -> tuple[list[ExecutedPage], list[str]]:
    """The executed pages in ``book`` (all ``*.ipynb``; ``only``: those named), and a problem for
    each notebook that is not a readable executed page."""
    pages, problems = [], []
    # not the runner's .PAGE.running.ipynb of a page being executed
    found = sorted(p for p in Path(book).glob("*.ipynb") if not p.name.startswith("."))
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


def drift_problems(page: ExecutedPage) -> list[str]:
    """Why a page no longer matches the registry or its template (empty if it does)."""
    where = f"{page.path.name} (profile {page.profile})"
    if page.name not in load_pages():
        return [f"{where}: not a page of experiments.yml; remove it or add it to the registry"]
    try:
        wanted = parameters(page.name, page.profile)
    except (ValueError, RegistryError) as err:
        return [f"{where}: {err}"]
    problems = []
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


def _first_difference(mine: list, theirs: list) -> str:
    for k, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            first = (b[1].strip().split("\n") or [""])[0][:60]
            return f"template cell {k} ({b[0]}, starting {first!r}) differs"
    return f"the page has {len(mine)} template cells, the template {len(theirs)}"


# ------------------------------------------------------------------------------------------------
# The results each template loads
# ------------------------------------------------------------------------------------------------

Load = tuple[str, Callable[[], object]]  # (what is loaded, a read under cache mode 'only')


def _fields(cls, values: dict) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _trajectories(configs, runtime) -> list[Load]:
    from ..trajectory import describe_config, stored_trajectory
    return [(describe_config(c), lambda c=c: stored_trajectory(c, runtime)) for c in configs]


def _orders(params: dict, profile: str, runtime) -> list[Load]:
    from .pages import OrdersExperiment
    return _trajectories(OrdersExperiment.from_parameters(params).configs(), runtime)


def _summary(params: dict, profile: str, runtime) -> list[Load]:
    from .pages import OrdersExperiment
    from .registry import resolved_parameters
    if params.get("train_missing"):
        return []  # a smoke summary trains what it lacks; book pages only load
    # the summary reads its figure pages' trajectories at its own profile (summary.page_experiment)
    return [load for name in params["pages"] for load in _trajectories(
        OrdersExperiment.from_parameters(resolved_parameters(name, profile)).configs(), runtime)]


def _order_average(params: dict, profile: str, runtime) -> list[Load]:
    from .order_average_study import OrderAverageExperiment
    experiment = OrderAverageExperiment(**_fields(OrderAverageExperiment, params))
    return _trajectories(list(dict.fromkeys(experiment.configs().values())), runtime)


def _sharpness(params: dict, profile: str, runtime) -> list[Load]:
    from ..sharpness import Probe, run_probes
    from ..trajectory import TrajectoryConfig
    from .sharpness_study import SharpnessExperiment
    loads = []
    for name in ("synthetic", "fashion"):  # the template's two problems
        experiment = SharpnessExperiment(
            TrajectoryConfig.from_fields(params[name], name), seeds=params[f"{name}_seeds"],
            probe=Probe(**params[f"{name}_probe"], eigenpairs=params["eigenpairs"],
                        tol=params["lanczos_tol"]))
        loads += [(repr(run), lambda run=run: run_probes(run, runtime)) for run in experiment.runs()]
    return loads


def _lie_bracket(params: dict, profile: str, runtime) -> list[Load]:
    from .lie_study import LieStudy, run_study
    studies = [LieStudy(**params["check"], lr_factors=params["check_factors"],
                        fit_points=params["fit_points"], activation=a)
               for a in params["activations"]]
    studies += [LieStudy(**run, lr_factors=params["run_factors"], fit_points=params["fit_points"])
                for run in params["runs"]]
    return [(repr(s), lambda s=s: run_study(s, runtime)) for s in studies]


def _stationary(params: dict, profile: str, runtime) -> list[Load]:
    from .stationary_study import StationaryStudy, run_study
    from .stationary_study import run_replicates
    study = StationaryStudy(**_fields(StationaryStudy, params))
    # the page also reads its replicates of the main comparison (the template's cell that calls
    # run_replicates with these parameters)
    return [(repr(study), lambda: run_study(study, "cpu", runtime.results_dir, "only")),
            (f"replicates of {study!r}", lambda: run_replicates(
                study, params["replicates"], params["replicate_chains"], "cpu",
                runtime.results_dir, "only"))]


# template -> the results a page of it loads, built as the template builds them. `contraction`
# computes everything in the notebook and loads nothing.
LOADERS: dict[str, Callable[[dict, str, object], list[Load]]] = {
    "orders": _orders, "summary": _summary, "order_average": _order_average,
    "sharpness": _sharpness, "lie_bracket": _lie_bracket, "stationary": _stationary,
    "contraction": lambda params, profile, runtime: [],
}


def loaded_results(page: ExecutedPage, results_dir: Path) -> list[Load] | None:
    """What the page loads from ``results_dir``, each as a read that raises `MissingResultError`
    when the result is missing or invalid; None for a template `LOADERS` does not know."""
    from ..trajectory import Runtime
    template = load_pages()[page.name]["template"]
    if template not in LOADERS:
        return None
    params = {**template_defaults(template_path(page.name)), **page.parameters,
              "profile": page.profile}
    runtime = Runtime(cache="only", progress=False, threads=1, results_dir=Path(results_dir))
    return LOADERS[template](params, page.profile, runtime)


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


def verify_book(book: Path | None = None, only: list[str] | None = None,
                results_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of every executed page in ``book`` (default ``book/``) against the
    registry, its template and the results in ``results_dir`` (default $ITERATION_ORDER_RESULTS,
    else the repository's ``results/``). Reads only: nothing is executed or computed."""
    book = Path(book) if book is not None else ROOT / "book"
    results_dir = Path(results_dir or os.environ.get("ITERATION_ORDER_RESULTS")
                       or ROOT / "results")
    pages, problems = executed_pages(book, only)
    notes = []
    for page in pages:
        problems += drift_problems(page)
        if page.profile not in load_pages().get(page.name, {}).get("profiles", {}):
            continue  # not a page of the registry at this profile: nothing to look up
        if loaded_results(page, results_dir) is None:
            notes.append(f"{page.path.name}: the results of template "
                         f"{load_pages()[page.name]['template']!r} are not pre-checked (add it "
                         f"to verify.LOADERS); the nbval check still runs it cache-only")
            continue
        problems += cache_problems(page, results_dir)
    return problems, notes
