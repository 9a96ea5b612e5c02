"""The registry of book pages (``experiments.yml``): template, parameters per profile, prose.

Each page names a template notebook in ``notebooks/`` and gives parameters under ``common`` and
under each profile:

* ``smoke`` — seconds, fake or tiny data: CI and nbval;
* ``cpu`` — what a 2-core machine without a GPU runs for the book;
* ``paper`` — the paper's exact settings, for a GPU.

A profile's parameters are ``common`` updated by the profile's own. Departures from the paper are
listed automatically (every parameter whose value differs from the paper profile's) plus the
page's own ``notes`` for that profile.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import yaml

__all__ = ["PARTS", "PROFILES", "ROOT", "load_pages", "page", "parameters", "departures",
           "default_profile", "template_path", "template_parameters", "template_defaults",
           "resolved_parameters", "check_registry"]

PROFILES = ("smoke", "cpu", "paper")
ROOT = Path(__file__).resolve().parents[3]
REGISTRY = ROOT / "experiments.yml"
RUNTIME_PARAMETERS = ("jobs", "profile")  # passed to every page, not part of the science
# The book's parts, in reading order: a page's `part` (default "practice") must be one of them.
PARTS = {"theory": "Contractions in theory",
         "practice": "Forward and backward in practice (main text, Appendices A–B)",
         "appendices": "Approximating and averaging orders (Appendices C–D)",
         "extensions": "Beyond the paper"}


@lru_cache(maxsize=None)
def _read(path: str) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)["pages"]


def load_pages(path: Path = REGISTRY) -> dict:
    return _read(str(path))


def page(name: str, path: Path = REGISTRY) -> dict:
    pages = load_pages(path)
    if name not in pages:
        raise ValueError(f"unknown page {name!r}; pages are: {', '.join(pages)}")
    return pages[name]


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")


def parameters(name: str, profile: str, path: Path = REGISTRY) -> dict:
    """The plain parameter values a page runs with under a profile."""
    _check_profile(profile)
    entry = page(name, path)
    return {**entry.get("common", {}), **entry["profiles"][profile]}


def departures(name: str, profile: str, path: Path = REGISTRY) -> list[str]:
    """How a profile departs from the paper, parameter by parameter, then in the page's words."""
    _check_profile(profile)
    mine, paper = parameters(name, profile, path), parameters(name, "paper", path)
    lines = [f"`{k}` = {json.dumps(mine[k])} (paper: {json.dumps(paper.get(k))})"
             for k in mine if mine[k] != paper.get(k)]
    return lines + list(page(name, path).get("notes", {}).get(profile, []))


def default_profile() -> str:
    """cpu without CUDA, paper with it."""
    import torch
    return "paper" if torch.cuda.is_available() else "cpu"


def template_path(name: str, path: Path = REGISTRY) -> Path:
    return ROOT / "notebooks" / f"{page(name, path)['template']}.ipynb"


def template_parameters(template: Path) -> set[str]:
    """The names a template's ``parameters`` cell declares (papermill's own inspection)."""
    return set(template_defaults(template))


@lru_cache(maxsize=None)
def _defaults(template: str) -> dict:
    import ast

    import papermill
    return {name: ast.literal_eval(spec["default"])
            for name, spec in papermill.inspect_notebook(template).items()}


def template_defaults(template: Path) -> dict:
    """The values a template's ``parameters`` cell assigns (its smoke defaults), by name."""
    return dict(_defaults(str(template)))


def resolved_parameters(name: str, profile: str, path: Path = REGISTRY) -> dict:
    """Every value a page runs with: its template's defaults, overridden by its registry entry.

    A page need not set a parameter that does not matter to it (the depth of an MLP for a ResNet
    page), but the template's default still enters the run's config and so its cache name."""
    return {**template_defaults(template_path(name, path)), **parameters(name, profile, path)}


def check_registry(path: Path = REGISTRY) -> list[str]:
    """Every problem of the registry: unknown templates or profiles, undeclared parameters."""
    problems = []
    for name, entry in load_pages(path).items():
        template = ROOT / "notebooks" / f"{entry.get('template')}.ipynb"
        if not template.is_file():
            problems.append(f"{name}: template {template.name} does not exist")
            continue
        declared = template_parameters(template)
        missing = set(PROFILES) - set(entry.get("profiles", {}))
        if missing:
            problems.append(f"{name}: no parameters for profile(s) {sorted(missing)}")
        for profile in set(entry.get("profiles", {})) & set(PROFILES):
            unknown = set(parameters(name, profile, path)) - declared
            if unknown:
                problems.append(f"{name} [{profile}]: {sorted(unknown)} are not parameters of "
                                f"{template.name} (it declares {sorted(declared)})")
        if entry.get("part", "practice") not in PARTS:
            problems.append(f"{name}: unknown part {entry.get('part')!r}; parts are "
                            f"{', '.join(PARTS)}")
        for key in ("title", "claim"):
            if not entry.get(key):
                problems.append(f"{name}: no {key}")
    return problems
