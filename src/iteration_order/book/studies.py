"""The study behind each template, by template name: the one place the book's machinery (the
runner, the command line, the book check) reaches a page's own code.

The registry, which every study reads, imports none of them (no import circle; tested in
tests/test_package.py): checks that need a study's code get it from here.
"""
from __future__ import annotations

from pathlib import Path

from . import registry
from .orders import OrdersExperiment

__all__ = ["CONFIG_CHECKS", "check_registry"]

# template -> what refuses a page's resolved parameters without running anything (raises
# ValueError): the orders template builds every run's config, which checks orders, steps, fields
CONFIG_CHECKS = {"orders": OrdersExperiment.from_parameters}


def check_registry(path: Path | None = None) -> list[str]:
    """`registry.check_registry` with every study's own check of its pages' values."""
    return registry.check_registry(path, CONFIG_CHECKS)
