"""The study behind each template, by template name: the one place the book's machinery (the
runner, the command line, the book check) reaches a page's own code.

Each study module (named after its template) provides the page protocol:

* ``page_setup(values)``: what a page of the template builds from its parameter values (the
  template's parameters cell, as `registry.page_values` collects them) — the template's own setup
  cell calls it, and so does the book check, so the two cannot disagree;
* ``page_loads(setup, runtime)``: the results that page reads, each as ``(what, read)`` where the
  read raises `cache.MissingResultError` under cache mode 'only' if the result is missing or
  invalid (`verify.cache_problems` runs them before nbval re-executes anything).

The registry, which every study reads, imports none of them (no import circle; tested in
tests/test_package.py): checks that need a study's code get it from here.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import contraction, glue_keys, lie_bracket, order_average, orders, registry, sharpness, \
    stationary, summary

__all__ = ["STUDIES", "CONFIG_CHECKS", "check_registry", "page_setup", "page_loads"]

STUDIES: dict[str, ModuleType] = {
    "contraction": contraction, "orders": orders, "lie_bracket": lie_bracket,
    "order_average": order_average, "sharpness": sharpness, "stationary": stationary,
    "summary": summary}

# template -> what refuses a page's resolved parameters without running anything (raises
# ValueError): the orders template builds every run's config, which checks orders, steps, fields
CONFIG_CHECKS = {"orders": orders.OrdersExperiment.from_parameters}


def check_registry(path: Path | None = None) -> list[str]:
    """`registry.check_registry` with every study's own check of its pages' values, and every
    glue key the prose quotes that its page's template does not declare (`glue_keys`)."""
    return registry.check_registry(path, CONFIG_CHECKS) + glue_keys.registry_problems(path)


def _study(template: str) -> ModuleType:
    if template not in STUDIES:
        raise ValueError(f"unknown template {template!r}; templates are: {', '.join(STUDIES)}")
    return STUDIES[template]


def page_setup(template: str, values: dict):
    """`page_setup` of the template's study."""
    return _study(template).page_setup(values)


def page_loads(template: str, values: dict, runtime) -> list:
    """The results a page of ``template`` with parameter ``values`` reads (see the docstring)."""
    study = _study(template)
    return study.page_loads(study.page_setup(values), runtime)
