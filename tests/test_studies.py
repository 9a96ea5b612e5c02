"""One page, one source (issue 23): each template's study builds the page's setup from the
template's parameters (`page_setup`), and the template's cell and the book check both call it."""
from __future__ import annotations

import ast
import json

import pytest

from iteration_order.book import studies
from iteration_order.book.registry import (RUNTIME_PARAMETERS, ROOT, load_pages, parameters,
                                           template_defaults, template_path)

TEMPLATES = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


def _cells(template: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{template}.ipynb").read_text())["cells"]


def test_every_template_has_a_study_with_the_page_protocol():
    assert sorted(studies.STUDIES) == TEMPLATES
    for template, module in studies.STUDIES.items():
        assert callable(module.page_setup) and callable(module.page_loads), template


def test_every_template_builds_its_setup_through_its_study():
    for template in TEMPLATES:
        if template == "contraction":
            continue  # nothing set up: every example is computed in the notebook
        code = "\n".join("".join(c["source"]) for c in _cells(template) if c["cell_type"] == "code")
        assert f'page_setup(page_values(globals(), "{template}"))' in code, template


class _Reads(dict):
    """A dict that remembers which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def items(self):
        self.read |= set(self)
        return super().items()


def _names_used_by_cells(template: str) -> set[str]:
    names = set()
    for cell in _cells(template):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell["cell_type"] != "code" or "parameters" in tags:
            continue
        source = "\n".join(line for line in "".join(cell["source"]).split("\n")
                           if not line.lstrip().startswith("%"))
        names |= {node.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Name)}
    return names


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t != "contraction"])
def test_every_parameter_a_template_declares_is_read_by_its_study_or_its_cells(template):
    defaults = template_defaults(ROOT / "notebooks" / f"{template}.ipynb")
    values = _Reads({**defaults, "profile": "smoke", "page": ""})
    studies.page_setup(template, values)
    unread = set(defaults) - values.read - _names_used_by_cells(template) - set(RUNTIME_PARAMETERS)
    assert unread == set(), f"{template} declares parameters nothing reads: {sorted(unread)}"


def test_every_page_of_the_registry_sets_up_at_every_profile():
    for name, entry in load_pages().items():
        for profile in entry["profiles"]:
            values = {**template_defaults(template_path(name)), **parameters(name, profile),
                      "profile": profile, "page": name, "jobs": 1}
            studies.page_setup(entry["template"], values)


def test_an_unknown_template_is_named():
    with pytest.raises(ValueError, match="unknown template 'nope'; templates are: contraction"):
        studies.page_setup("nope", {})
