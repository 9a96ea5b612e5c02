"""What a page template shows when it is opened as a plain notebook (Jupyter, VS Code, a
downloaded ``.ipynb``), without the book.

The book places figures with ``{glue:figure}`` and fills the conclusion's numbers with
``{glue:text}`` roles; only jupyter-book resolves those. So the templates glue through `glue`
below, which also *displays* every figure and its caption in the cell that makes it, and end with
`show_conclusion`, which prints the page's conclusion with its numbers filled in as plain
markdown. In the book those outputs would appear a second time: the runner tags every cell that
glues a figure ``remove-output`` and the conclusion cell is ``remove-cell``, so each figure and
the conclusion are shown exactly once there (`tests/test_display.py`, `tests/test_built_html.py`).
"""
from __future__ import annotations

import re
from typing import Any

import matplotlib.figure
import pandas as pd
from IPython.display import Markdown, display as _show
from myst_nb import glue as _myst_glue

from .registry import PROFILES, page as registry_page

__all__ = ["glue", "glued", "show_table", "figure_data_digest", "png_digest", "DATA_DIGEST",
           "PNG_DIGEST", "render_roles", "conclusion_markdown",
           "show_conclusion", "FIGURE_MIME"]

FIGURE_MIME = "image/png"
# A glued figure is rendered at least this many pixels wide (and at least 200 dpi): the book's
# column is under 900 CSS px, so a PNG scaled to it keeps >= 150 dpi (96 CSS px per inch), which
# tests/test_built_html.py checks on the built pages.
MIN_FIGURE_PIXELS = 1500
MIN_FIGURE_DPI = 200
_glued: dict[str, Any] = {}  # this kernel's glued values, by key, for `show_conclusion`
# a MyST role: {name}`content`; the roles the registry's prose uses are rendered below
_ROLE = re.compile(r"\{(?P<role>[a-z]+(?::[a-z]+)?)\}`(?P<body>[^`]*)`")


def glue(key: str, value: Any, display: bool = False) -> None:
    """`myst_nb.glue` (never displayed by it), remembering the value for `show_conclusion`; a
    figure, and markdown glued under a key ending in ``_caption``, are also displayed here so
    that the notebook shows them without the book."""
    _glued[key] = value
    if isinstance(value, matplotlib.figure.Figure):
        value.set_dpi(max(MIN_FIGURE_DPI, MIN_FIGURE_PIXELS / value.get_figwidth()))
    _myst_glue(key, value, display=display)
    if isinstance(value, matplotlib.figure.Figure):
        _glue_digests(key, value)
    if isinstance(value, matplotlib.figure.Figure) or (key.endswith("_caption")
                                                        and isinstance(value, Markdown)):
        _show(value)


# Beside every glued figure, two digests (never shown): ``<key>__data``, of what the figure
# plots (its lines, markers, bars, patches and texts), which the book check compares on a re-run
# like any glued number; and ``<key>__png``, of the PNG bytes glued, which `verify` checks against
# the PNG stored in the page (a replaced image is caught) and the book check masks (a raster
# depends on the fonts of the machine that draws it).
DATA_DIGEST, PNG_DIGEST = "__data", "__png"


def figure_data_digest(fig: matplotlib.figure.Figure) -> str:
    """sha256 of everything a figure plots: every line's and collection's coordinates, every
    patch's outline and every non-empty text, in drawing order."""
    import hashlib

    import numpy as np
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    digest = hashlib.sha256()
    for artist in fig.findobj():
        if isinstance(artist, Line2D):
            parts = [np.asarray(artist.get_xydata(), dtype=float)]
        elif isinstance(artist, Collection):
            parts = [np.asarray(artist.get_offsets(), dtype=float)]
            parts += [np.asarray(p.vertices, dtype=float) for p in artist.get_paths()]
        elif isinstance(artist, Patch):
            parts = [np.asarray(artist.get_path().vertices @ artist.get_patch_transform()
                                .get_matrix()[:2, :2].T, dtype=float)]
        elif isinstance(artist, Text) and artist.get_text():
            parts = [artist.get_text()]
        else:
            continue
        digest.update(type(artist).__name__.encode())
        for part in parts:
            digest.update(part.encode() if isinstance(part, str) else part.tobytes())
    return "data sha256:" + digest.hexdigest()


def png_digest(png_base64: str) -> str:
    """The digest `verify` compares: sha256 of the PNG bytes of a notebook output."""
    import base64
    import hashlib
    return "png sha256:" + hashlib.sha256(base64.b64decode(png_base64)).hexdigest()


def _glue_digests(key: str, fig: matplotlib.figure.Figure) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    _myst_glue(key + DATA_DIGEST, figure_data_digest(fig), display=False)
    if InteractiveShell.initialized():
        data, _ = InteractiveShell.instance().display_formatter.format(fig)
        if FIGURE_MIME in data:
            _myst_glue(key + PNG_DIGEST, png_digest(data[FIGURE_MIME]), display=False)


def glued() -> dict[str, Any]:
    """The values glued so far in this kernel, by key (a copy)."""
    return dict(_glued)


def show_table(frame: pd.DataFrame) -> None:
    """Display a whole table: pandas would cut a long one to its first and last rows."""
    with pd.option_context("display.max_rows", None, "display.max_columns", None):
        _show(frame)


def _text(value: Any, spec: str) -> str:
    if isinstance(value, Markdown):
        return str(value.data)
    if spec:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    return str(value)


def render_roles(text: str, values: dict[str, Any]) -> str:
    """The registry's prose with its roles resolved for a plain notebook: ``{glue:text}`k:spec```
    becomes the glued value formatted by ``spec``, ``{glue:md}`k``` its markdown, a ``{doc}`` link
    its text and a citation the paper's authors. A key that was not glued is left visible as
    ``[k: not computed]`` rather than silently dropped."""
    def one(match: re.Match) -> str:
        role, body = match["role"], match["body"]
        if role.startswith("glue"):
            key, _, spec = body.partition(":")
            if key not in values:
                return f"[{key}: not computed]"
            return _text(values[key], spec)
        if role == "doc":
            return re.sub(r"\s*<[^>]*>$", "", body) or body
        if role.startswith("cite"):
            return "Dherin et al. (2025)" if role == "cite:t" else "(Dherin et al., 2025)"
        return body
    return _ROLE.sub(one, text)


def conclusion_markdown(page: str, profile: str, values: dict[str, Any]) -> str:
    """The page's written conclusion at ``profile`` with its numbers filled in."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    written = registry_page(page).get("conclusion", {}).get(profile)
    if written:
        return "## What our run shows\n\n" + render_roles(written.strip(), values)
    # No prose for this profile (smoke, quick): the page's measured claims, as glued
    claims = [f"- `{key[:-len('_evidence')]}`: {_text(value, '')}"
              + (f"; {_text(values[key[:-9] + '_interval'], '')}"
                 if key[:-9] + "_interval" in values else "")
              for key, value in values.items() if key.endswith("_evidence")]
    return (f"## What our run shows\n\nNo conclusion is written for page `{page}` at the "
            f"`{profile}` profile; the figures and tables above are the result"
            + (", and the claims measure as follows (per-seed ratio other order / forward below "
               "1 means the claim holds):\n\n" + "\n".join(claims) if claims else ".")
            + "\n")


def show_conclusion(page: str, profile: str) -> None:
    """Display the conclusion of ``page`` (a registry page name, as `book params` writes it) with
    the numbers this kernel glued. Without a page name (a template run with its own defaults)
    say how to get one."""
    if not page:
        _show(Markdown("*No page name was given (parameter `page`), so no conclusion is shown: "
                         "`python -m iteration_order.book params <page> --profile <profile>` "
                         "writes the parameters of a page, its name included.*"))
        return
    _show(Markdown(conclusion_markdown(page, profile, _glued)))
