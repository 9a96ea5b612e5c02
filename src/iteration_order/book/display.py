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

__all__ = ["glue", "show_table", "figure_data_digest", "png_digest", "DATA_DIGEST",
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
        _glue_figure(key, value)
        return
    _myst_glue(key, value, display=display)
    if key.endswith("_caption") and isinstance(value, Markdown):
        _show(value)


# Beside every glued figure, two digests (never shown): ``<key>__data``, of what the figure
# plots (its lines, markers, bars, patches and texts), which the book check compares on a re-run
# like any glued number; and ``<key>__png``, of the PNG bytes glued, which `verify` checks against
# the PNG stored in the page (a replaced image is caught) and the book check masks (a raster
# depends on the fonts of the machine that draws it).
DATA_DIGEST, PNG_DIGEST = "__data", "__png"


def figure_data_digest(fig: matplotlib.figure.Figure) -> str:
    """sha256 of what a figure plots, independent of the fonts and layout of the machine that
    draws it: per axes, the coordinates of its lines, collections and patches (bars, fills) and
    its titles, labels and texts as strings; legends and frames, which are laid out around text,
    are left out."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()

    def add(kind: str, value) -> None:
        digest.update(kind.encode())
        digest.update(value.encode() if isinstance(value, str)
                      else np.ascontiguousarray(value, dtype=float).tobytes())

    for ax in fig.axes:
        for line in ax.lines:
            add("line", line.get_xydata())
        for collection in ax.collections:
            add("offsets", collection.get_offsets())
            for path in collection.get_paths():
                add("path", path.vertices)
        for patch in ax.patches:
            add("patch", patch.get_patch_transform().transform(patch.get_path().vertices))
        for text in [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]:
            add("text", text.get_text())
    if fig._suptitle is not None:
        add("suptitle", fig._suptitle.get_text())
    return "data sha256:" + digest.hexdigest()


def png_digest(png_base64: str) -> str:
    """The digest `verify` compares: sha256 of the PNG bytes of a notebook output."""
    import base64
    import hashlib
    return "png sha256:" + hashlib.sha256(base64.b64decode(png_base64)).hexdigest()


def _glue_figure(key: str, fig: matplotlib.figure.Figure) -> None:
    """Glue a figure as `myst_nb.glue` does (hidden), its digests beside it, and display the same
    image for the notebook: drawn once, because a second drawing of a figure can differ from the
    first by a few bytes, and the digest must be of the image stored."""
    from IPython.core.formatters import format_display_data
    from myst_nb.ext.glue import GLUE_PREFIX

    bundle, metadata = format_display_data(fig)
    _show({GLUE_PREFIX + mime: value for mime, value in bundle.items()}, raw=True,
          metadata={**metadata, "scrapbook": {"name": key, "mime_prefix": GLUE_PREFIX}})
    _myst_glue(key + DATA_DIGEST, figure_data_digest(fig), display=False)
    if FIGURE_MIME in bundle:
        _myst_glue(key + PNG_DIGEST, png_digest(bundle[FIGURE_MIME]), display=False)
    _show(bundle, raw=True, metadata=metadata)  # the notebook's own view of the same image


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


def _measured_claims(values: dict[str, Any]) -> list[str]:
    """One bullet per claim the page glued: its evidence (``<claim>_evidence``) and, where glued,
    its interval (``<claim>_interval``)."""
    bullets = []
    for key, value in values.items():
        claim, suffix = key.rpartition("_")[0], key.rpartition("_")[2]
        if suffix != "evidence":
            continue
        interval = values.get(f"{claim}_interval")
        bullets.append(f"- `{claim}`: {_text(value, '')}"
                       + (f"; {_text(interval, '')}" if interval is not None else ""))
    return bullets


def conclusion_markdown(page: str, profile: str, values: dict[str, Any]) -> str:
    """The page's written conclusion at ``profile`` with its numbers filled in."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; allowed: {', '.join(PROFILES)}")
    try:
        written = registry_page(page).get("conclusion", {}).get(profile)
    except ValueError as err:  # a page of another registry (a test's, a user's): say so, go on
        return f"## What our run shows\n\nNo conclusion is shown: {err}."
    if written:
        return "## What our run shows\n\n" + render_roles(written.strip(), values)
    claims = _measured_claims(values)  # no prose for this profile (smoke, quick)
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
