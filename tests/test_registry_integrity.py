"""The registry is data, and inert (issue 21, item 2): page and template names are safe as file
names, data paths stay inside the data root, raw HTML in its text is refused, a duplicate key is
an error. Each is refused when the file is read, so no command acts on such a registry."""
import textwrap

import pytest

from iteration_order.book import studies
from iteration_order.book.studies import check_registry

from iteration_order.book.registry import REGISTRY, RegistryError, load_pages
from iteration_order.validation import NAME_PATTERN, check_data_path, markup_problem

ENTRY = """
    template: orders
    title: A page
    claim: Something holds.
    common: {}
    profiles: {smoke: {}, cpu: {}, paper: {}}
"""


def registry(tmp_path, pages: str, name="experiments.yml"):
    path = tmp_path / name
    path.write_text("pages:\n" + textwrap.indent(textwrap.dedent(pages), "  "))
    return path


def entry(name='"ok-page"', **changes):
    text = textwrap.dedent(ENTRY)
    for key, value in changes.items():
        text = text.replace(f"\n{key}: " + text.split(f"\n{key}: ")[1].split("\n")[0],
                            f"\n{key}: {value}")
    return f"{name}:" + textwrap.indent(text, "  ")


def test_every_page_and_template_name_of_the_registry_matches_the_pattern():
    pages = load_pages(REGISTRY)
    assert all(NAME_PATTERN.fullmatch(name) for name in pages), list(pages)
    assert all(NAME_PATTERN.fullmatch(page["template"]) for page in pages.values())


def test_a_well_formed_entry_is_read(tmp_path):
    assert list(load_pages(registry(tmp_path, entry()))) == ["ok-page"]


@pytest.mark.parametrize("name", ['"../../escaped-dir/x"', '"evil\\n[1/1] forged log line"',
                                  '"Upper"', '"a b"', '"-starts-with-dash"', '"x.ipynb"',
                                  '"a/b"', "1"])
def test_a_page_name_that_is_not_a_safe_file_name_is_refused(tmp_path, name):
    with pytest.raises(RegistryError, match="a page name must be a name of lower-case letters"):
        load_pages(registry(tmp_path, entry(name)))


@pytest.mark.parametrize("template", ["../book/fig04-x2", "/etc/passwd", "orders.ipynb", "null"])
def test_a_template_name_that_is_not_a_safe_file_name_is_refused(tmp_path, template):
    with pytest.raises(RegistryError, match="its template must be a name of lower-case letters"):
        load_pages(registry(tmp_path, entry(template=template)))


@pytest.mark.parametrize("dataset", ["npz:../evil", "npz:/etc/x", "npz:a/../../b", "npz:~/x"])
def test_a_data_path_outside_the_data_root_is_refused(tmp_path, dataset):
    with pytest.raises(RegistryError, match="must be a relative path inside the data root"):
        load_pages(registry(tmp_path, entry(common=f"{{dataset: '{dataset}'}}")))
    check_data_path("dataset", "npz:cifar10/subset")  # inside: accepted


@pytest.mark.parametrize("where, text", [
    ("claim", "'It holds <script>alert(1)</script>.'"),
    ("title", "'<img src=x onerror=alert(1)>'"),
    ("claim", "'a comment <!-- hidden -->'"),
    ("common", "{paper_figure: '<iframe src=x></iframe>'}"),
])
def test_raw_html_in_registry_text_is_refused(tmp_path, where, text):
    with pytest.raises(RegistryError, match="holds raw HTML"):
        load_pages(registry(tmp_path, entry(**{where: text})))


def test_text_that_only_looks_like_html_is_accepted():
    for text in ("{doc}`the summary <summary>` sets this", "pairs i < j ≤ n", "`<script>`",
                 "h<2/λ", "a link <https://example.org>"):
        assert markup_problem("claim", text) is None, text


def test_a_duplicate_page_key_is_an_error(tmp_path):
    with pytest.raises(RegistryError, match=r"found the key 'ok-page' twice \(first on line 2\)"):
        load_pages(registry(tmp_path, entry() + entry()))


def test_a_duplicate_key_inside_an_entry_is_an_error(tmp_path):
    text = entry().replace("  title: A page\n", "  title: A page\n  title: Another\n")
    with pytest.raises(RegistryError, match="found the key 'title' twice"):
        load_pages(registry(tmp_path, text))


def test_a_merge_key_may_still_be_overridden(tmp_path):
    text = (entry('"first"', common="&base {lr: 0.1, steps: 5}")
            + entry(common="{<<: *base, lr: 0.2}"))
    pages = load_pages(registry(tmp_path, text))
    assert pages["ok-page"]["common"] == {"lr": 0.2, "steps": 5}


def test_the_committed_registry_passes_the_check():
    assert check_registry() == []


def test_an_edited_registry_is_read_again(tmp_path):
    """A long `book run` reads the registry as each page starts: an edit made meanwhile reaches
    the pages not yet started (it once reached none, and two seed-count edits were lost)."""
    import os
    import time

    from iteration_order.book.registry import REGISTRY, load_pages
    path = tmp_path / "experiments.yml"
    text = REGISTRY.read_text()
    path.write_text(text)
    first = load_pages(path)["fig04-x2"]["title"]
    assert load_pages(path) is load_pages(path)  # unchanged file: parsed once
    path.write_text(text.replace(first, first + " (edited)", 1))
    stamp = time.time_ns() + 10 ** 9  # a later modification time, whatever the clock's grain
    os.utime(path, ns=(stamp, stamp))
    assert load_pages(path)["fig04-x2"]["title"] == first + " (edited)"
