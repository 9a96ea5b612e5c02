"""Execute the book's pages: ``python -m iteration_order.book run --profile cpu [--only PAGE]``.

Each page of ``experiments.yml`` is executed by papermill from its template in ``notebooks/``
into ``book/<page>.ipynb`` (``book/paper/<page>.ipynb`` at the paper profile, so that a page can be
in the book at both scales) with the profile's parameters, then decorated for the book: a header
(the paper's claim, the profile, every parameter, every departure from the paper, the wall time)
and the page's written conclusion for that profile. A page whose executed notebook was made from
the same template and parameters is skipped; trajectories are cached in ``results/``, so an
interrupted run resumes. Progress goes to stdout and to ``results/logs/book-<profile>.log``.

Nothing runs while ``check`` reports a problem of the registry, and a page's parameter names and
types are checked against its template before papermill writes them into the notebook as code. A
page executed at one profile is replaced by a run at another only with ``--force``.

Where the runs execute is the runner's choice, passed to the page kernels as environment variables
that `parallel.run_many` reads (never part of a cache key): ``--executor local|ray``
(``$ITERATION_ORDER_EXECUTOR``), ``--shards K`` (``$ITERATION_ORDER_SHARDS``) and ``--device``
(``$ITERATION_ORDER_DEVICE``). The paper profile's runs are on CUDA: on a machine without it, a
paper page renders from the ``results/*-cuda.json`` computed on a GPU elsewhere (cache mode
``only``: nothing is recomputed, a missing result fails the page), and its header says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from ..cache import CACHE_ENV, RESULTS_ENV
from ..devices import DEVICE_ENV, check_device, computable_here
from ..parallel import EXECUTOR_ENV, SHARDS_ENV, executor_choice, shard_count
from ..cost import format_seconds
from ..trajectory import CONV_FIELDS, MLP_FIELDS
from .studies import check_registry
from .registry import (PARTS, PROFILES, ROOT, RUNTIME_PARAMETERS, RegistryError,
                       checked_parameters, departures, load_pages, page,
                       parameters, template_defaults, template_path, use_default_data_root)

__all__ = ["run_pages", "fingerprint", "BOOK", "page_path", "PAPER_DIR"]

BOOK = ROOT / "book"
LOGS = ROOT / "results" / "logs"
BOOK_PROFILES = ("smoke", "cpu", "paper")  # those `run` executes into book/ (not quick)
HIDE = "remove-cell"  # jupyter-book drops such cells from the page
HIDE_OUTPUT = "remove-output"  # ... or only their outputs
HIDE_INPUT = "hide-input"  # ... and shows these collapsed, their outputs open
NBVAL_MARKER = "# NBVAL_CHECK_OUTPUT"
# The paper profile's pages live in their own folder, next to the cpu (or smoke) page of the same
# name: the book shows the paper-scale page first and the cpu one nested under it (`write_toc`).
PAPER_DIR = "paper"
# The device each profile's runs are on unless --device says otherwise (None: auto, CUDA when
# present): the paper profile is for a GPU, and renders elsewhere from the GPU's results.
PROFILE_DEVICE = {"paper": "cuda"}


def page_path(name: str, profile: str) -> Path:
    """Where a page executed at ``profile`` is stored: ``book/paper/<page>.ipynb`` at the paper
    profile, ``book/<page>.ipynb`` at the others (cpu, or a smoke run)."""
    return BOOK / PAPER_DIR / f"{name}.ipynb" if profile == "paper" else BOOK / f"{name}.ipynb"


def _sibling(name: str, profile: str, book: Path | None = None) -> Path:
    """The same page at the other scale: the cpu (or smoke) page of a paper page, and back, in
    ``book`` (default: the book's folder `BOOK`)."""
    other = page_path(name, "cpu" if profile == "paper" else "paper")
    return other if book is None else book / other.relative_to(BOOK)


def book_root(path: Path, profile: str) -> Path:
    """The book folder holding a page executed at ``profile`` at ``path`` (`page_path` undone),
    so that a page is checked against its own book's pages, wherever that book is."""
    return path.parent.parent if profile == "paper" else path.parent


def _package_source() -> bytes:
    """Every source file of the package, the library and this book subpackage alike."""
    package = Path(__file__).resolve().parents[1]
    return b"".join(p.read_bytes() for p in sorted(package.rglob("*.py")))


def fingerprint(name: str, profile: str) -> str:
    """Changes when the template, the package's code or the page's parameters change.

    Re-executing a page whose trajectories are cached only re-evaluates the cells (seconds), so
    any change of the code that draws or summarises results refreshes every page.
    """
    payload = template_path(name).read_bytes() + _package_source() + json.dumps(
        [profile, parameters(name, profile)], sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _executed_fingerprint(path: Path) -> str | None:
    if not path.is_file():
        return None
    return nbformat.read(path, as_version=4).metadata.get("iteration_order", {}).get("fingerprint")


def _glues(nb, key: str) -> bool:
    """Whether an executed notebook glued ``key`` (myst-nb records the name in the output's
    metadata), so that the page's prose may refer to it."""
    return any(output.get("metadata", {}).get("scrapbook", {}).get("name") == key
               for cell in nb.cells for output in cell.get("outputs", []))


def _glues_figure(cell) -> bool:
    """Whether a cell glued a figure (myst-nb's prefixed mime type, see `_has_figure`)."""
    return any("scrapbook" in output.get("metadata", {})
               and any(key.endswith("image/png") for key in output.get("data", {}))
               for output in cell.get("outputs", []))


def _has_figure(nb) -> bool:
    """Whether an executed notebook holds a figure, shown or glued (myst-nb stores a glued
    figure under a prefixed mime type, e.g. application/papermill.record/image/png)."""
    return any(key.endswith("image/png") for cell in nb.cells
               for output in cell.get("outputs", []) for key in output.get("data", {}))


def _versions(name: str, profile: str, book: Path | None = None) -> str:
    """A line linking the page at the other scale, when it exists in ``book`` (default `BOOK`)
    (the link is relative to this page)."""
    other = _sibling(name, profile, book)
    executed = _executed_profile(other)
    if not executed:
        return ""
    if profile == "paper":
        return (f"**At the `{executed}` profile:** [this page as a 2-core CPU runs it]"
                f"(../{name}.ipynb); rerun it with `make reproduce PROFILE={executed} "
                f"PAGES={name}`.\n\n")
    return (f"**At the paper's scale:** [this page at the `paper` profile]"
            f"({PAPER_DIR}/{name}.ipynb), with the paper's settings; this one is the `{profile}` "
            f"profile's.\n\n")


def _where(profile: str, wall: float, day: str, rendered_from: str | None) -> str:
    """How the page was executed: here, or here from runs computed on another device."""
    machine = f"{platform.machine()} ({os.cpu_count()} cores)"
    if rendered_from:
        return (f"This page was rendered in {wall / 60:.1f} min of wall time on {machine} on {day}"
                f" from stored trajectories that were computed on `{rendered_from}` elsewhere "
                f"(nothing was recomputed here; the device, engine and torch version of the runs "
                f"are listed under *Produced by*).")
    return (f"This page was executed in {wall / 60:.1f} min of wall time "
            f"(trajectories already in the `results/` cache are loaded, not recomputed) on "
            f"{machine} on {day}.")


def _header(name: str, profile: str, params: dict, wall: float, day: str,
            produced_by: bool = False, rendered_from: str | None = None,
            book: Path | None = None) -> str:
    entry = page(name)
    # the template's defaults also enter the run (and its cache name): show them, marked as such
    all_defaults = template_defaults(template_path(name))
    defaults = {k: v for k, v in all_defaults.items()
                if k not in params and k not in RUNTIME_PARAMETERS}
    # a model other than the MLP never receives the MLP's fields (see OrdersExperiment.config)
    model = params.get("model", all_defaults.get("model", "mlp"))
    unused = set(MLP_FIELDS) if model != "mlp" else set(CONV_FIELDS)
    rows = "\n".join(
        [_row(k, v, "this page", k in unused) for k, v in params.items()]
        + [_row(k, v, "template default", k in unused) for k, v in defaults.items()])
    gaps = departures(name, profile)
    gap_text = "\n".join(f"- {g}" for g in gaps) if gaps else "- none: these are the paper's settings"
    template = template_path(name).relative_to(ROOT)
    produced = ("**Produced by:** {glue:md}`provenance`\n\n" if produced_by else "")
    rerun = _rerun_box(name, profile)
    return (f"# {entry['title']}\n\n"
            f"**The paper's claim** {{cite:p}}`dherin2025training`**.** "
            f"{entry['claim'].strip()}\n\n"
            f"**Profile:** `{profile}`. {_where(profile, wall, day, rendered_from)}\n\n"
            + produced + _versions(name, profile, book) + rerun.format(template=template) +
            f"**Departures from the paper at this profile:**\n\n{gap_text}\n\n"
            f"```{{dropdown}} All parameters of this run\n| parameter | value | set by |\n"
            f"|---|---|---|\n"
            f"{rows}\n```\n")


def _rerun_box(name: str, profile: str) -> str:
    """What a rerun of the page costs at each profile (stored estimates, `book cost --write`),
    then the commands; ``{template}`` is left for the caller."""
    from .costs import current_estimates, stored_estimates

    stored = stored_estimates()
    priced, stale = current_estimates(name, stored)
    costs = [f"`{p}` {format_seconds(priced[p])}" for p in PROFILES if p in priced]
    sentences = []
    if costs:
        sentences.append(f"Estimated compute of a rerun from scratch on {stored['machine']}, one "
                         f"core per run (`book cost`, {stored['day']}): {', '.join(costs)}; divide "
                         f"by the jobs you give it. On a GPU: not measured yet (README: the GPU "
                         f"report).")
    if stale:
        sentences.append(f"The stored estimate of {', '.join(f'`{p}`' for p in stale)} was "
                         f"priced for other parameters and is not quoted (`python -m "
                         f"iteration_order.book cost --profile <profile>` prices the page now).")
    if not sentences:
        sentences.append("`book cost` prices the figure pages only; this page's own runs are "
                         "timed in its cells.")
    cost = " ".join(sentences)
    profiles = [p for p in ("quick", "cpu", "paper") if p in page(name)["profiles"]]
    about = {"quick": " (about a minute)", "paper": " (the paper's settings)"}
    return (f"**Rerun it.** {cost} With papermill at any profile, "
            f"{', '.join(f'`{p}`' + about.get(p, '') for p in profiles)}: "
            f"`python -m iteration_order.book params {name} "
            f"--profile <profile> > params.yml`, then `papermill {{template}} {name}.ipynb -f "
            f"params.yml`; its runs go to `results/` as untracked files (README: Rerunning a "
            f"page by hand). Into the book: `make reproduce PROFILE={profile} PAGES={name}`."
            f"\n\n")


def _row(name: str, value, source: str, unused: bool) -> str:
    note = (", not used by this model" if unused else
            ", requested: the engine each run used is under *Produced by*" if name == "engine"
            else "")
    return f"| `{name}` | `{json.dumps(value)}` | {source}{note} |"


def _conclusion(name: str, profile: str) -> str:
    written = page(name).get("conclusion", {}).get(profile)
    if written:
        return f"## What our run shows\n\n{written.strip()}\n"
    return ("## What our run shows\n\nNo conclusion has been written for this profile yet: the "
            "figure and the stability table above are the measured result.\n")


def _tagged_markdown(text: str, tag: str):
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [tag]
    return cell


def _decorate(nb, name: str, profile: str, params: dict, wall: float, day: str | None = None,
              print_: str | None = None, rendered_from: str | None = None):
    """Add (or replace) the page header and conclusion; hide the parameter cells.

    ``print_`` is the fingerprint taken *before* execution (the template or the code may change
    while a page runs); by default the one stored in the notebook, else the current one.
    """
    day = day or f"{datetime.now(timezone.utc):%Y-%m-%d}"
    drop = {"template-only", "page-header", "page-conclusion"}

    def added_earlier(cell) -> bool:  # also recognises cells from before the tags existed
        return cell.cell_type == "markdown" and (
            "**The paper's claim" in cell.source
            or cell.source.startswith("## What our run shows"))

    nb.cells = [c for c in nb.cells
                if not (drop & set(c.metadata.get("tags", [])) or added_earlier(c))]
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and HIDE not in tags:
            cell.metadata["tags"] = tags = tags + [HIDE]  # the header shows the parameters
        if cell.cell_type == "code":
            # the templates' nbval markers are for their own test, not for readers
            cell.source = "\n".join(line for line in cell.source.split("\n")
                                     if line.strip() != NBVAL_MARKER)
            if not {HIDE, HIDE_INPUT} & set(tags):
                cell.metadata["tags"] = tags = tags + [HIDE_INPUT]  # code collapsed, output shown
            if _glues_figure(cell) and HIDE_OUTPUT not in tags:
                # the cell also displays its figure, for the notebook opened without the book
                # (`display.glue`); the book shows it once, where {glue:figure} places it
                cell.metadata["tags"] = tags + [HIDE_OUTPUT]
    header = _header(name, profile, params, wall, day, produced_by=_glues(nb, "provenance"),
                     rendered_from=rendered_from)
    nb.cells.insert(0, _tagged_markdown(header, "page-header"))
    nb.cells.append(_tagged_markdown(_conclusion(name, profile), "page-conclusion"))
    print_ = print_ or nb.metadata.get("iteration_order", {}).get("fingerprint") \
        or fingerprint(name, profile)
    nb.metadata["iteration_order"] = {"page": name, "profile": profile, "fingerprint": print_,
                                      "parameters": params, "wall_seconds": round(wall, 1),
                                      "executed_on": day}
    if rendered_from:
        nb.metadata["iteration_order"]["rendered_from"] = rendered_from


def _conclusion_changed(nb, name: str, profile: str) -> bool:
    """Whether the registry's conclusion for this page and profile differs from the one the
    executed notebook ``nb`` holds."""
    stored = [c.source for c in nb.cells if "page-conclusion" in c.metadata.get("tags", [])]
    return stored != [_conclusion(name, profile)]


def _refresh_prose(path: Path, name: str, profile: str) -> bool:
    """Re-apply the header to an up-to-date page (the registry's title, claim, notes or the
    sibling link may have changed). A changed conclusion is left for `execute_page`, which
    re-executes the page: a code cell shows it with its numbers, so only a run updates both.
    Returns whether the page was refreshed."""
    nb = nbformat.read(path, as_version=4)
    if _conclusion_changed(nb, name, profile):
        return False
    meta = nb.metadata["iteration_order"]
    before = nbformat.writes(nb)
    _decorate(nb, name, profile, parameters(name, profile), meta["wall_seconds"],
              meta.get("executed_on"), rendered_from=meta.get("rendered_from"))
    if nbformat.writes(nb) != before:
        tmp = path.with_name(f".{path.name}.prose")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    return True


def _log(message: str, profile: str) -> None:
    line = f"{datetime.now():%Y-%m-%d %H:%M:%S} {message}"
    print(line, flush=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"book-{profile}.log", "a") as fh:
        fh.write(line + "\n")


def _executed_profile(path: Path) -> str | None:
    if not path.is_file():
        return None
    return nbformat.read(path, as_version=4).metadata.get("iteration_order", {}).get("profile")


def check_overwrite(name: str, profile: str, force: bool = False) -> None:
    """Refuse to replace a page executed at another profile (the book's pages are at one profile;
    a smoke run must not silently replace a cpu page) unless ``force``."""
    path = page_path(name, profile)
    executed = _executed_profile(path)
    if executed and executed != profile and not force:
        raise ValueError(f"book/{path.relative_to(BOOK).as_posix()} was executed at profile "
                         f"{executed!r}; running it at profile {profile!r} would replace it. "
                         f"To replace it, add FORCE=1 to `make reproduce` (--force to "
                         f"`python -m iteration_order.book run`, force=True from Python); to "
                         f"rerun it without touching the book, use papermill as the README's "
                         f"'Rerunning a page by hand' shows.")


def execute_page(name: str, profile: str, jobs: int, force: bool = False,
                 rendered_from: str | None = None) -> bool:
    """Execute one page (into `page_path`) unless it is up to date; return whether it ran. A page
    executed at another profile is replaced only with ``force``; the parameters are checked
    against the template before papermill writes them into the notebook. ``rendered_from``: the
    device whose stored runs the page renders from, when it is not this machine's (the header
    says so)."""
    import papermill

    out = page_path(name, profile)
    current = fingerprint(name, profile)
    if not force and _executed_fingerprint(out) == current:
        if _refresh_prose(out, name, profile):
            _log(f"{name}: up to date at profile {profile}, skipped (prose refreshed)", profile)
            return False
        # a code cell shows the conclusion with its numbers (display.show_conclusion), and the
        # book check compares that output: rewriting the markdown alone would leave it stale
        _log(f"{name}: its conclusion changed in experiments.yml; re-executing", profile)
    check_overwrite(name, profile, force)
    params = checked_parameters(name, profile)
    _log(f"{name}: executing at profile {profile} with {jobs} job(s)"
         + (f", rendering from stored {rendered_from} results" if rendered_from else ""), profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{name}.running.ipynb")
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(template_path(name)), str(tmp), parameters={**params, "jobs": jobs,
                                                            "profile": profile, "page": name},
            cwd=str(ROOT), kernel_name="python3", progress_bar=False, log_output=True)
        wall = time.perf_counter() - start
        nb = nbformat.read(tmp, as_version=4)
        if not _has_figure(nb):
            raise RuntimeError(f"page {name} produced no figure (is MPLBACKEND forcing a "
                               f"non-inline backend?)")
        nb.metadata.pop("iteration_order", None)
        _decorate(nb, name, profile, params, wall, print_=current, rendered_from=rendered_from)
        nbformat.write(nb, tmp)
        os.replace(tmp, out)  # a page is replaced whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
    sibling = _sibling(name, profile)
    other = _executed_profile(sibling)
    if other and not _refresh_prose(sibling, name, other):  # its header links this page now
        _log(f"{name}: its page at profile {other} was not updated: its conclusion changed in "
             f"experiments.yml, so it must be executed again", profile)
    _log(f"{name}: done in {wall / 60:.1f} min", profile)
    return True


def run_pages(profile: str, only: list[str] | None = None, jobs: int = 1, force: bool = False,
              missing_only: bool = False, executor: str | None = None, shards: int | None = None,
              device: str | None = None) -> list[str]:
    """Execute the named pages (default: all) in registry order; return those that ran.

    ``executor``, ``shards`` and ``device`` say where the pages' runs execute (see the module's
    docstring); None keeps the environment's setting (``executor``, ``shards``) or the profile's
    device (CUDA at the paper profile, else auto). Runs on a device this machine lacks are read
    from ``results/``, never computed. Nothing runs while ``check_registry`` reports a problem,
    or while a chosen page was executed at another profile (unless ``force``): both raise
    ValueError naming every problem."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    if profile not in BOOK_PROFILES:
        raise ValueError(f"the {profile} profile is for a rerun by hand and never becomes a page "
                         f"of the book: `python -m iteration_order.book params <page> --profile "
                         f"{profile} > params.yml`, then `papermill notebooks/<template>.ipynb "
                         f"out.ipynb -f params.yml` (README: Rerunning a page by hand); the "
                         f"book's profiles are {', '.join(BOOK_PROFILES)}")
    settings, rendered_from = _run_settings(profile, executor, shards, device)
    names = list(load_pages())
    for name in only or []:
        page(name)  # unknown names fail before anything runs
    problems = check_registry()  # with the studies' own checks of their pages' values
    if problems:
        raise RegistryError("experiments.yml has problems (python -m iteration_order.book "
                            "check); nothing was run:\n" + "\n".join(problems))
    chosen = [n for n in names if not only or n in only]
    if missing_only:
        chosen = [n for n in chosen if not page_path(n, profile).is_file()]
    refused = []
    for name in chosen:
        try:
            check_overwrite(name, profile, force)
        except ValueError as err:
            refused.append(str(err))
    if refused:
        raise ValueError("nothing was run:\n" + "\n".join(refused))
    os.environ.setdefault(RESULTS_ENV, str(ROOT / "results"))
    use_default_data_root()
    ran, failed = [], []
    with _environment(settings):  # the page kernels inherit it
        for name in chosen:  # one failing page does not stop the others
            try:
                if execute_page(name, profile, jobs, force, rendered_from=rendered_from):
                    ran.append(name)
            except Exception as err:  # noqa: BLE001 - reported, then raised below
                _log(f"{name}: FAILED: {type(err).__name__}: {str(err)[-500:]}", profile)
                failed.append(name)
    if failed:
        raise RuntimeError(f"pages failed: {', '.join(failed)} (see results/logs/book-{profile}.log)")
    return ran


def _run_settings(profile: str, executor: str | None, shards: int | None,
                  device: str | None) -> tuple[dict, str | None]:
    """The environment the page kernels get (checked here, before anything runs) and the device
    the pages render from when it is not here (None when they compute where needed)."""
    settings = {EXECUTOR_ENV: executor_choice(executor), SHARDS_ENV: str(shard_count(shards))}
    # the resolver's forms (auto, cpu, cuda, cuda:N), checked by the resolver's own check
    device = check_device("device", device or PROFILE_DEVICE.get(profile, "auto"))
    if device == "auto":
        return settings, None
    settings[DEVICE_ENV] = device
    if computable_here(device):
        return settings, None
    # no CUDA here: the pages read the GPU's results and compute nothing
    mode = os.environ.get(CACHE_ENV, "").strip()
    if mode and mode != "only":
        raise ValueError(f"${CACHE_ENV}={mode!r}, but the {profile} profile's runs are on cuda, "
                         f"which this machine lacks: its pages can only be rendered from stored "
                         f"results (cache mode 'only'); unset ${CACHE_ENV}, or pass --device cpu "
                         f"to compute them here")
    settings[CACHE_ENV] = "only"
    return settings, "cuda"


@contextlib.contextmanager
def _environment(values: dict):
    """``os.environ`` updated with ``values`` inside the block, restored afterwards."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refresh_template(name: str) -> Path:
    """Re-execute ``notebooks/<name>.ipynb`` at its own (smoke) defaults and store the outputs in it,
    which nbval then compares against. Results go to a throw-away folder, never to ``results/``."""
    import tempfile

    import papermill

    path = ROOT / "notebooks" / f"{name}.ipynb"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
        raise ValueError(f"unknown template {name!r}; templates are: {known}")
    tmp = path.with_name(f".{path.stem}.running.ipynb")
    previous = os.environ.get(RESULTS_ENV)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            os.environ[RESULTS_ENV] = scratch  # the kernel inherits it
            use_default_data_root()
            papermill.execute_notebook(str(path), str(tmp), cwd=str(ROOT), kernel_name="python3",
                                       progress_bar=False)
        nb = nbformat.read(tmp, as_version=4)
        if not _has_figure(nb):
            raise RuntimeError(f"template {name} produced no figure")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = previous
    return path


def write_figures() -> None:
    """The book's own figures that are not the output of a page (the introduction's diagram)."""
    from .plots import order_diagram
    (BOOK / "figures").mkdir(exist_ok=True)
    order_diagram().savefig(BOOK / "figures" / "orders.png", dpi=200,
                            metadata={"Software": None})


def write_toc(path: Path = ROOT / "_toc.yml") -> list[str]:
    """Write the table of contents: the introduction, every executed page by part, references.

    Pages of the registry that have not been executed yet are left out (and listed by
    ``python -m iteration_order.book list``), so the book always builds from what exists.
    """
    executed = [n for n in load_pages() if (BOOK / f"{n}.ipynb").is_file()
                or page_path(n, "paper").is_file()]
    lines = ["# Generated by `python -m iteration_order.book toc` from experiments.yml and the",
             "# executed pages in book/: do not edit by hand.", "format: jb-book",
             "root: book/index"]
    parts = {key: [n for n in executed if page(n).get("part", "practice") == key] for key in PARTS}
    references = (BOOK / "references.md").is_file()  # the bibliography closes the book
    if any(parts.values()) or references:
        lines.append("parts:")
    for key, names in parts.items():
        if names:
            lines += [f'  - caption: "{PARTS[key]}"', "    chapters:"]
            lines += [line for n in names for line in _toc_entry(n)]
    if references:
        lines += ['  - caption: "References"', "    chapters:", "      - file: book/references"]
    path.write_text("\n".join(lines) + "\n")
    return executed


def _toc_entry(name: str) -> list[str]:
    """A page's lines in the table of contents: the paper-scale page first when it exists, the
    cpu (or smoke) page of the same name nested under it, titled by its profile."""
    paper, other = page_path(name, "paper"), BOOK / f"{name}.ipynb"
    if not paper.is_file():
        return [f"      - file: book/{name}"]
    lines = [f"      - file: book/{PAPER_DIR}/{name}"]
    if other.is_file():
        lines += ["        sections:", f"          - file: book/{name}",
                  f'            title: "At the {_executed_profile(other) or "cpu"} profile"']
    return lines


def page_parameters_yaml(name: str, profile: str) -> str:
    """The parameters ``book run`` gives a page at a profile, as YAML for ``papermill -f``: the
    page's registry entry (anchors and merge keys resolved) and the profile; the template's own
    defaults fill in the rest, as they do for the runner."""
    import yaml

    values = {**checked_parameters(name, profile), "profile": profile, "page": name}
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
