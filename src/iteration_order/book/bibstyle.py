"""The bibliography's labels in the form the text cites them: "[Dherin et al., 2025]".

The text cites author-year (``bibtex_reference_style: author_year``), but pybtex's styles label the
list by alpha codes ("[DAK+25]"), so a reader would see two names for one work. This Sphinx
extension registers a pybtex formatting style, ``author_year_labels`` (``bibtex_default_style``
in _config.yml), that is pybtex's ``plain`` with author-year labels.
"""
from __future__ import annotations

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as Plain
from pybtex.style.labels import BaseLabelStyle

__all__ = ["author_year_label", "setup"]


def _last(person) -> str:
    return str(Text.from_latex(" ".join(person.prelast_names + person.last_names)))


def author_year_label(entry) -> str:
    """'Dherin et al., 2025', 'Wang and Roberts, 2025', 'Diaconis and Freedman, 1999'."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    if not people:
        names = entry.key
    elif len(people) == 1:
        names = _last(people[0])
    elif len(people) == 2:
        names = f"{_last(people[0])} and {_last(people[1])}"
    else:
        names = f"{_last(people[0])} et al."
    return f"{names}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield author_year_label(entry)


class AuthorYearStyle(Plain):
    default_label_style = AuthorYearLabels


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year_labels", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
