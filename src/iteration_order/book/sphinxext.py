"""The book's own Sphinx settings (listed in _config.yml's extensions), where a setting alone
would not do:

* the bibliography's labels in the form the text cites them, "[Dherin et al., 2025]": the text
  cites author-year (``bibtex_reference_style: author_year``), but pybtex's styles label the list
  by alpha codes ("[DAK+25]"), so a reader would see two names for one work. This registers a
  pybtex formatting style, ``author_year_labels`` (``bibtex_default_style``), that is pybtex's
  ``plain`` with author-year labels;
* no figure numbers of the book's own: "Fig. 7" beside "the paper's Figure 4" would be two
  numbering schemes that disagree. _config.yml sets ``numfig: false``, but
  sphinx-jupyterbook-latex (loaded by jupyter-book) sets ``numfig = True`` for every builder when
  the configuration is read; this sets it back afterwards.
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


def _no_figure_numbers(app, config) -> None:
    config["numfig"] = False


def setup(app):
    register_plugin("pybtex.style.formatting", "author_year_labels", AuthorYearStyle)
    # after sphinx-jupyterbook-latex's own config-inited handler (default priority 500)
    app.connect("config-inited", _no_figure_numbers, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
