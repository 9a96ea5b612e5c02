"""Checks of the rendered book in ``_build/html``: it must read offline and show no test markers.

These tests look at what ``jupyter-book build`` wrote, so they run after the build
(``make check-html``, part of ``make test``) and are deselected from the plain ``pytest`` run by
the ``built_html`` marker. Without a build they skip. ``BOOK_HTML`` points them at another folder.
"""
from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "html"))

pytestmark = [
    pytest.mark.built_html,
    pytest.mark.skipif(not (HTML / "index.html").is_file(),
                       reason=f"no built book at {HTML} (run `make build-book` first)"),
]

EXTERNAL = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
# <link rel=...> values that make the browser fetch the target while the page loads
FETCHED_LINKS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut",
                 "apple-touch-icon", "mask-icon", "manifest"}
# tag -> attributes whose URL the browser loads by itself (links <a href> are only followed)
LOADED = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"),
          "iframe": ("src",), "embed": ("src",), "object": ("data",), "video": ("src", "poster"),
          "audio": ("src",), "track": ("src",), "input": ("src",)}
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")]*)\1\s*\)|@import\s+(['"])([^'"]+)\3""",
                     re.IGNORECASE)


def _pages() -> list[Path]:
    """Every HTML page of the site (``_static`` only holds theme templates, not pages)."""
    return sorted(p for p in HTML.rglob("*.html") if "_static" not in p.relative_to(HTML).parts)


def _external_in_css(text: str) -> list[str]:
    found = []
    for match in CSS_URL.finditer(text):
        url = match.group(2) if match.group(2) is not None else match.group(4)
        if url and EXTERNAL.match(url):
            found.append(url)
    return found


class _Loads(HTMLParser):
    """Collects the URLs a page makes the browser load, and its inline CSS."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "link":
            rel = set(attrs.get("rel", "").lower().split())
            if rel & FETCHED_LINKS:
                self.urls.append(attrs.get("href", ""))
        for name in LOADED.get(tag, ()):
            value = attrs.get(name, "")
            # srcset lists "URL width, URL width"
            self.urls += [part.strip().split(" ")[0] for part in value.split(",")] \
                if name == "srcset" else [value]
        if "style" in attrs:
            self.styles.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def test_the_book_has_pages():
    pages = _pages()
    assert len(pages) > 2, pages
    assert (HTML / "book" / "index.html").is_file()


def test_no_page_loads_anything_from_another_site():
    """No script, style sheet, font, icon or image of any page comes from the network."""
    offenders = {}
    for page in _pages():
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        bad = [u for u in parser.urls if EXTERNAL.match(u)]
        bad += [u for style in parser.styles for u in _external_in_css(style)]
        if bad:
            offenders[str(page.relative_to(HTML))] = sorted(set(bad))
    assert not offenders, f"pages loading external resources: {offenders}"


def test_no_style_sheet_imports_from_another_site():
    """The theme's CSS (fonts included) is served from _static, never fetched elsewhere."""
    sheets = sorted((HTML / "_static").rglob("*.css"))
    assert sheets, "no style sheets in _static"
    offenders = {str(s.relative_to(HTML)): _external_in_css(s.read_text(errors="replace"))
                 for s in sheets}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"style sheets importing external resources: {offenders}"


def test_math_is_rendered_by_the_local_mathjax():
    pages_with_math = [p for p in _pages() if 'class="math' in p.read_text(errors="replace")]
    assert pages_with_math, "no page has math: the check below would prove nothing"
    assert (HTML / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert list((HTML / "_static" / "mathjax").rglob("*.woff")), "MathJax's fonts are missing"
    for page in pages_with_math:
        text = page.read_text(errors="replace")
        assert re.search(r'<script[^>]*src="[^"]*_static/mathjax/tex-chtml\.js', text), page


def test_every_page_has_one_search_bar():
    """pydata-sphinx-theme 0.17.1 (with sphinx-book-theme 1.3.0) adds a header search button above
    the sidebar's on every page; the pinned 0.16.1 shows only the sidebar's."""
    counts = {str(p.relative_to(HTML)): p.read_text(errors="replace").count("search-button-field")
              for p in _pages()}
    counts = {k: n for k, n in counts.items() if n}  # the root index.html only redirects
    assert counts, "no page has a search bar"
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n != 1}


def test_no_page_shows_nbval_markers():
    """``# NBVAL_CHECK_OUTPUT`` steers nbval on the templates; readers must not see it."""
    shown = [str(p.relative_to(HTML)) for p in _pages()
             if "NBVAL_CHECK_OUTPUT" in p.read_text(errors="replace")]
    assert not shown, f"pages showing NBVAL_CHECK_OUTPUT: {shown}"


def _glued_figures(notebook: Path) -> int:
    """How many {glue:figure} directives a page's markdown holds."""
    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    return sum(cell.source.count("```{glue:figure}") for cell in nb.cells
               if cell.cell_type == "markdown")


def test_every_figure_is_shown_exactly_once():
    """The templates also display their figures, so that a notebook opened without the book shows
    them (`iteration_order.book.display`); in the book those outputs are removed and each figure
    appears once, where {glue:figure} places it."""
    checked = 0
    for notebook in sorted((ROOT / "book").rglob("*.ipynb")):
        html = HTML / notebook.relative_to(ROOT).with_suffix(".html")
        if not html.is_file():
            continue
        loads = _Loads()
        loads.feed(html.read_text(encoding="utf-8"))
        images = [u for u in loads.urls if u.split("?")[0].endswith(".png")
                  and "_static" not in u]
        assert len(images) == len(set(images)) == _glued_figures(notebook), (html, images)
        checked += 1
    assert checked >= 10


COLUMN_PX = 900  # wider than the book theme's article column: an image is shown at most this wide


def _png_width(path: Path) -> int:
    import struct
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", head[16:20])[0]


def test_every_figure_has_at_least_150_dpi_at_its_displayed_width():
    """A PNG is scaled to the column (CSS max-width 100%), 96 CSS px to the inch: its pixel width
    over the width it is shown at must give >= 150 dpi."""
    checked = 0
    for page in _pages():
        loads = _Loads()
        loads.feed(page.read_text(encoding="utf-8"))
        for url in loads.urls:
            if not url.split("?")[0].endswith(".png") or "_static" in url:
                continue
            png = (page.parent / url.split("?")[0]).resolve()
            width = _png_width(png)
            shown = min(width, COLUMN_PX)
            assert width / shown * 96 >= 150, (page.name, url, width)
            checked += 1
    assert checked >= 20


def test_wide_tables_and_equations_scroll_inside_the_column():
    css = (HTML / "_static" / "iteration-order.css").read_text()
    for selector in (".cell_output table", "div.math", 'mjx-container[display="true"]'):
        assert selector in css
    assert css.count("overflow-x: auto") >= 2
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        if 'http-equiv="Refresh"' in text:  # the site's root only redirects to the book's index
            continue
        assert "iteration-order.css" in text, page.name


def test_captions_carry_no_figure_number_of_the_book():
    """The paper's figure numbers are the only ones a reader sees (numfig is off)."""
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        assert 'class="caption-number"' not in text, page.name


def test_bibliography_labels_match_the_citations():
    text = (HTML / "book" / "references.html").read_text(encoding="utf-8")
    assert "Dherin et al., 2025" in text and "DAK+25" not in text


def _article_text(page: Path) -> str:
    return re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))


def test_no_table_is_cut_and_no_number_reads_wrong():
    """pandas cuts long tables ('... 85 rows × 6 columns'); a negative zero, a plural after 1 and
    NaN for a run that did not diverge are what the book's number formatting never prints."""
    bad = re.compile(r"\d+ rows × \d+ columns|-0\.0+(?![0-9])|\b1 (?:seeds|recorded steps|steps)\b")
    found = {page.name: bad.findall(_article_text(page)) for page in _pages()
             if page.parent.name in ("book", "paper")}
    assert {name: hits for name, hits in found.items() if hits} == {}
