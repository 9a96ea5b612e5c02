"""The registry of book pages (``experiments.yml``): template, parameters per profile, prose.

Each page names a template notebook in ``notebooks/`` and gives parameters under ``common`` and
under each profile:

* ``smoke`` — seconds, fake or tiny data: CI and nbval;
* ``cpu`` — what a 2-core machine without a GPU runs for the book;
* ``paper`` — the paper's exact settings, for a GPU.

A profile's parameters are ``common`` updated by the profile's own. Departures from the paper are
listed automatically (every parameter whose value differs from the paper profile's) plus the
page's own ``notes`` for that profile.

Parameter names must be identifiers declared by the template, and values must have the type of
the template's default (`parameter_problems`, one rule for `check_registry`, the runner and each
template's check cell, `check_parameters`); their ranges are the configs' to check. A file that
is not a registry at all raises `RegistryError` naming the file and the problem.

The registry is data, never code, and its text is inert (`_structure_problems`, checked on every
read, so every command refuses such a file): a duplicate key anywhere is an error (not the later
value silently kept); page and template names match `validation.NAME_PATTERN` (lower-case
letters, digits, '-' and '_': they become file names and log lines); a ``npz:NAME`` data set is a
relative path inside the data root; and no string holds raw HTML (a ``<script>``, a tag, a
comment) outside a code span or MyST role: titles, claims, conclusions, notes and parameters
become the page's markdown, where raw HTML would reach the built page as markup. Such text is
refused rather than escaped, so that what the registry says is what the page shows.
"""
from __future__ import annotations

import json
import os
import logging
from functools import lru_cache
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from ..validation import (check_data_path, check_identifier, check_like, check_name,
                          markup_problem, size_problems)

__all__ = ["PARTS", "PROFILES", "REQUIRED_PROFILES", "ROOT", "load_pages", "page", "parameters", "departures",
           "default_profile", "template_path", "template_defaults", "use_default_data_root",
           "resolved_parameters", "check_registry", "RegistryError", "parameter_problems",
           "template_problems", "checked_parameters", "check_parameters", "page_values"]

PROFILES = ("smoke", "quick", "cpu", "paper")
# Every page has these; ``quick`` (a figure page's claim tested in about a minute on a laptop CPU,
# for a rerun by hand with papermill) only where one can be: it never becomes a page of the book.
REQUIRED_PROFILES = ("smoke", "cpu", "paper")
ROOT = Path(__file__).resolve().parents[3]
REGISTRY = ROOT / "experiments.yml"
DATA_ROOT_ENV = "DATA_ROOT"  # where the data sets are read (see the data root's README)
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"  # beside the repository, as in the project
RUNTIME_PARAMETERS = ("jobs", "profile", "page")  # passed to every page, not part of the science
# How a page's runs execute, never what they compute: not departures from the paper (the engine
# each run used is named under the header's *Produced by*, from the results)
HOW_IT_RUNS = ("engine", "data_root", "download")
# The kernel's own names in a notebook's namespace, besides those starting with "_": IPython's
# (its user_ns_hidden) and ipykernel's `open`, which warns about opening the standard streams.
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}
# The book's parts, in reading order: a page's `part` (default "practice") must be one of them.
PARTS = {"theory": "Contractions in theory",
         "practice": "Forward and backward in practice (main text, Appendices A–B)",
         "appendices": "Approximating and averaging orders (Appendices C–D)",
         "extensions": "Beyond the paper"}


class RegistryError(ValueError):
    """The registry cannot be read, or a page's parameters cannot be run: names the problem."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader (plain data, no Python objects), refusing a mapping that gives one key
    twice: yaml would keep the later value silently. Keys brought in by a merge (``<<: *anchor``)
    may be overridden, as YAML means them to be."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key!r} twice (first on line {first})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _read(path: str) -> dict:
    """The registry at ``path``, parsed once per version of the file: a long `book run` sees an
    edit from the next page it starts (each page records the values it ran with)."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such registry file") from None
    return _parse(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _parse(path: str, mtime_ns: int, size: int) -> dict:
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise RegistryError(f"{path}: no such registry file") from None
    except yaml.YAMLError as err:
        raise RegistryError(f"{path} is not valid YAML: {err}") from None
    problems = _structure_problems(data)
    if problems:
        raise RegistryError(f"{path} is not a registry of pages:\n" + "\n".join(problems))
    return data["pages"]


def _structure_problems(data) -> list[str]:
    """What keeps a parsed file from being read as pages at all (the rest is `check_registry`'s)."""
    if data is None:
        return ["the file is empty; it must hold a 'pages:' mapping of page names to entries"]
    if not isinstance(data, dict) or "pages" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        return [f"no 'pages:' mapping at the top level (found {found})"]
    pages = data["pages"]
    if not isinstance(pages, dict) or not pages:
        return [f"'pages' must be a mapping of page names to entries; got {pages!r}"]
    return [problem for name, entry in pages.items() for problem in _entry_problems(name, entry)]


def _entry_problems(name, entry) -> list[str]:
    """What keeps one page's entry from being read: a name or template that is not a safe name,
    its parts that must be mappings, raw HTML in its text, a data path outside the data root."""
    try:
        check_name("a page name", name)
    except ValueError as err:
        return [str(err)]
    if not isinstance(entry, dict):
        return [f"page {name!r} must be a mapping (template, profiles, ...); got {entry!r}"]
    problems = []
    try:
        check_name(f"page {name!r}: its template", entry.get("template"))
    except ValueError as err:
        problems.append(str(err))
    problems += _text_problems(f"page {name!r}", entry)
    if not isinstance(entry.get("common", {}), dict):
        problems.append(f"page {name!r}: 'common' must be a mapping of parameters; got "
                        f"{entry['common']!r}")
    profiles = entry.get("profiles", {})
    if not isinstance(profiles, dict):
        return problems + [f"page {name!r}: 'profiles' must be a mapping of profile names to "
                           f"parameters; got {profiles!r}"]
    return problems + [f"page {name!r}, profile {profile!r}: parameters must be a mapping (write "
                       f"{{}} for none); got {values!r}"
                       for profile, values in profiles.items() if not isinstance(values, dict)]


def _text_problems(where: str, value, key: str = "") -> list[str]:
    """Raw HTML in any string of a page's entry (keys included), and ``npz:`` data sets outside
    the data root."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in
                _text_problems(where, k, key) + _text_problems(where, v, f"{key}.{k}".strip("."))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _text_problems(where, v, f"{key}[{i}]")]
    if not isinstance(value, str):
        return []
    problems = [p for p in [markup_problem(f"{where}: {key or 'a key'}", value)] if p]
    if value.startswith("npz:"):
        try:
            check_data_path(f"{where}: {key}", value)
        except ValueError as err:
            problems.append(str(err))
    return problems


def load_pages(path: Path | None = None) -> dict:
    """Every page of the registry (``experiments.yml`` unless ``path``), by name."""
    return _read(str(path or REGISTRY))


def page(name: str, path: Path | None = None) -> dict:
    pages = load_pages(path)
    if name not in pages:
        raise ValueError(f"unknown page {name!r}; pages are: {', '.join(pages)}")
    return pages[name]


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")


def parameters(name: str, profile: str, path: Path | None = None) -> dict:
    """The plain parameter values a page runs with under a profile."""
    _check_profile(profile)
    entry = page(name, path)
    profiles = entry.get("profiles", {})
    if profile not in profiles:
        raise RegistryError(f"page {name!r} has no parameters for profile {profile!r}; it has "
                            f"{', '.join(map(str, profiles)) or 'none'}")
    return {**entry.get("common", {}), **profiles[profile]}


def departures(name: str, profile: str, path: Path | None = None) -> list[str]:
    """How a profile departs from the paper, parameter by parameter, then in the page's words.
    Each item is markdown; a structured value (a study's list of runs) becomes nested bullets."""
    _check_profile(profile)
    mine, paper = parameters(name, profile, path), parameters(name, "paper", path)
    # a parameter the paper profile leaves out takes the template's default there
    paper = {**template_defaults(template_path(name, path)), **paper}
    stated = set(page(name, path).get("paper_states", []))
    lines = [_departure(k, mine[k], paper.get(k), k in stated) for k in mine
             if mine[k] != paper.get(k) and k not in HOW_IT_RUNS]
    return lines + list(page(name, path).get("notes", {}).get(profile, []))


def _departure(key: str, mine, paper, stated: bool) -> str:
    """One changed value; the paper's value is named as the paper's only where the paper states
    it (the page's ``paper_states``), else as our paper profile's choice."""
    if not isinstance(mine, (dict, list)) or not any(isinstance(v, (dict, list)) for v in
                                                      (mine.values() if isinstance(mine, dict)
                                                       else mine)):
        if stated:
            return f"`{key}` = {_inline(mine)} (paper: {_inline(paper)})"
        return (f"`{key}` = {_inline(mine)} (the paper gives no value; our `paper` profile "
                f"uses {_inline(paper)})")
    return (f"`{key}` differs from the paper profile's; here it is:\n"
            + _bullets(mine, "  ") + "\n\n  and at the paper profile:\n\n" + _bullets(paper, "  "))


def _bullets(value, indent: str) -> str:
    """A nested value as markdown bullets: a mapping one bullet per key, a list one per item."""
    if isinstance(value, dict):
        items = [(f"`{k}`", v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"entry {i}" if len(value) > 1 else "", v) for i, v in enumerate(value, start=1)]
    else:
        return f"{indent}- {_inline(value)}"
    lines = []
    for label, v in items:
        if isinstance(v, (dict, list)) and any(isinstance(x, (dict, list)) for x in
                                               (v.values() if isinstance(v, dict) else v)):
            lines.append(f"{indent}- {label}:\n" + _bullets(v, indent + "  "))
        elif isinstance(v, dict):
            lines.append(f"{indent}- {label + ': ' if label else ''}"
                         + ", ".join(f"`{k}` {_inline(x)}" for k, x in v.items()))
        else:
            lines.append(f"{indent}- {label + ': ' if label else ''}{_inline(v)}")
    return "\n".join(lines)


def _inline(value) -> str:
    return json.dumps(value)


def use_default_data_root() -> None:
    """``$DATA_ROOT`` for this process and its page kernels: as set, else `DEFAULT_DATA_ROOT`."""
    os.environ.setdefault(DATA_ROOT_ENV, str(DEFAULT_DATA_ROOT.resolve()))


def default_profile() -> str:
    """cpu without CUDA, paper with it."""
    from ..devices import cuda_here
    return "paper" if cuda_here() else "cpu"


def template_path(name: str, path: Path | None = None) -> Path:
    return ROOT / "notebooks" / f"{page(name, path)['template']}.ipynb"



@lru_cache(maxsize=None)
def _defaults(template: str) -> dict:
    import ast

    import papermill
    # papermill logs "Input Notebook: ..." at INFO, which `book run` shows for the cells' output
    logger = logging.getLogger("papermill")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        inspected = papermill.inspect_notebook(template)
    finally:
        logger.setLevel(level)
    return {name: ast.literal_eval(spec["default"]) for name, spec in inspected.items()}


def template_defaults(template: Path) -> dict:
    """The values a template's ``parameters`` cell assigns (its smoke defaults), by name."""
    return dict(_defaults(str(template)))


def resolved_parameters(name: str, profile: str, path: Path | None = None) -> dict:
    """Every value a page runs with: its template's defaults, overridden by its registry entry.

    A page need not set a parameter that does not matter to it (the depth of an MLP for a ResNet
    page); the template's default still reaches the page's experiment, which decides what it
    uses (`OrdersExperiment` passes the MLP's fields to an MLP only)."""
    return {**template_defaults(template_path(name, path)), **parameters(name, profile, path)}


def parameter_problems(values: dict, declared: dict) -> list[str]:
    """What is wrong with parameter ``values`` for a template that declares ``declared`` (name ->
    default): names that are not identifiers or not declared, values not of the default's type.
    Only types: the ranges are checked by the configs the template builds."""
    found = (_parameter_problem(key, value, declared) for key, value in values.items())
    return [problem for problem in found if problem]


def _parameter_problem(key, value, declared: dict) -> str | None:
    try:
        check_identifier("a parameter name", key)  # before all else: papermill writes it as code
    except ValueError as err:
        return str(err)
    if key not in declared:
        return (f"{key!r} is not a parameter of the template; it declares "
                f"{', '.join(sorted(declared))}")
    try:
        check_like(key, value, declared[key])
    except ValueError as err:
        return str(err)
    return None


def template_problems(name: str, profile: str, path: Path | None = None) -> list[str]:
    """`parameter_problems` of one page at one profile, runtime parameters included."""
    values = {**parameters(name, profile, path), "jobs": 1, "profile": profile, "page": name}
    defaults = template_defaults(template_path(name, path))
    # the size of its runs too, before anything builds them (validation.MAX_STEPS, MAX_RECORDED)
    return parameter_problems(values, defaults) + size_problems({**defaults, **values})


def checked_parameters(name: str, profile: str, path: Path | None = None) -> dict:
    """A page's parameters at a profile, refused (RegistryError) unless every name is declared by
    its template and every value has the declared type: nothing reaches papermill otherwise,
    which writes each name into the notebook as code."""
    problems = template_problems(name, profile, path)
    if problems:
        raise RegistryError(f"page {name!r} at profile {profile!r}: " + "; ".join(problems))
    return parameters(name, profile, path)


def page_values(namespace: dict, template: str) -> dict:
    """The values of a template's parameters in ``namespace`` (a page kernel's ``globals()``):
    what its study's `page_setup` is built from, in the template's cell and in the book check."""
    declared = template_defaults(ROOT / "notebooks" / f"{template}.ipynb")
    return {name: namespace[name] for name in declared}


def check_parameters(namespace: dict, template: str) -> None:
    """The check a template runs right after its parameters cell (and papermill's injected one):
    ``check_parameters(globals(), "orders")``. Every public name of the namespace must be declared
    by the template and hold a value of the declared type. Prints nothing when all is well."""
    path = ROOT / "notebooks" / f"{template}.ipynb"
    if not path.is_file():
        raise ValueError(f"unknown template {template!r}: no {path}")
    declared = template_defaults(path)
    given = {k: v for k, v in namespace.items()
             if not k.startswith("_") and k not in _IPYTHON_NAMES}
    problems = parameter_problems(given, declared)
    if problems:
        flattened = any(isinstance(declared.get(k), (list, dict))
                        and isinstance(v, (str, int, float)) for k, v in given.items())
        hint = (" (papermill's -p passes numbers and text only: give lists and dicts with -y or "
                "-f)") if flattened else ""
        raise ValueError(f"bad parameters for the {template} template: " + "; ".join(problems)
                         + hint)


def _config_problem(name: str, profile: str, path: Path | None,
                    config_checks: Mapping[str, Callable[[dict], object]]) -> str | None:
    """A study's own check of a page's values without running anything (for the ``orders``
    template: every run's config is built), from ``config_checks`` (template name -> a callable
    that raises ValueError on the page's resolved parameters; see `studies.CONFIG_CHECKS`)."""
    check = config_checks.get(page(name, path).get("template"))
    if check is None:
        return None
    try:
        check(resolved_parameters(name, profile, path))
    except ValueError as err:
        return str(err)
    return None


def check_registry(path: Path | None = None,
                   config_checks: Mapping[str, Callable[[dict], object]] | None = None
                   ) -> list[str]:
    """Every problem of the registry: unknown templates, parts or profiles, parameter names a
    template does not declare (or that are not identifiers), values of the wrong type, and, with
    ``config_checks`` (`studies.check_registry` passes them), the values a page's study refuses.
    The registry imports no study: the studies depend on it, never the other way."""
    problems = []
    for name, entry in load_pages(path).items():
        template = ROOT / "notebooks" / f"{entry.get('template')}.ipynb"
        if not template.is_file():
            problems.append(f"{name}: template {template.name} does not exist")
            continue
        missing = set(REQUIRED_PROFILES) - set(entry.get("profiles", {}))
        if missing:
            problems.append(f"{name}: no parameters for profile(s) {sorted(missing)}")
        unknown = set(entry.get("profiles", {})) - set(PROFILES)
        if unknown:
            problems.append(f"{name}: unknown profile(s) {sorted(unknown, key=str)}; profiles "
                            f"are {', '.join(PROFILES)}")
        for profile in [p for p in PROFILES if p in entry.get("profiles", {})]:
            found = template_problems(name, profile, path)
            if not found:
                found = [p for p in [_config_problem(name, profile, path,
                                                     config_checks or {})] if p]
            problems += [f"{name} [{profile}]: {p}" for p in found]
        stated = entry.get("paper_states", [])
        known = set(parameters(name, "paper", path)) if "paper" in entry.get("profiles", {}) else set()
        if not isinstance(stated, list) or not all(isinstance(k, str) and k in known
                                                   for k in stated):
            problems.append(f"{name}: paper_states must list parameters of the page's paper "
                            f"profile ({', '.join(sorted(known))}); got {stated!r}")
        if entry.get("part", "practice") not in PARTS:
            problems.append(f"{name}: unknown part {entry.get('part')!r}; parts are "
                            f"{', '.join(PARTS)}")
        for key in ("title", "claim"):
            if not entry.get(key):
                problems.append(f"{name}: no {key}")
    return problems
