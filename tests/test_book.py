"""The book's page registry and runner (no page is executed here: nbval covers the templates)."""
import json
import re
import nbformat
import pytest

from iteration_order.book import studies
from iteration_order.book.studies import check_registry

from iteration_order.book import cli, registry, runner
from iteration_order.book.registry import PROFILES, REQUIRED_PROFILES, load_pages, parameters


def test_every_page_uses_only_parameters_its_template_declares():
    assert check_registry() == []


def test_every_page_has_all_three_profiles_and_prose():
    for name, entry in load_pages().items():
        assert set(REQUIRED_PROFILES) <= set(entry["profiles"]) <= set(PROFILES), name
        assert entry["title"] and entry["claim"], name


def test_unknown_page_or_profile_fails_with_the_allowed_names():
    with pytest.raises(ValueError, match="unknown page 'fig99'; pages are: theory, fig04-x2"):
        parameters("fig99", "cpu")
    with pytest.raises(ValueError, match="unknown profile 'gpu'; allowed: smoke, quick, cpu, paper"):
        parameters("fig04-x2", "gpu")
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        runner.run_pages("fast")
    with pytest.raises(ValueError, match="unknown page 'nope'"):
        runner.run_pages("smoke", only=["nope"])


def test_cli_rejects_bad_names_before_running_anything(capsys):
    # one paragraph on stderr, without argparse's usage banner (SystemExit prints its message)
    with pytest.raises(SystemExit, match="^error: unknown page 'nope'"):
        cli.main(["run", "--profile", "smoke", "--only", "nope"])
    assert "usage:" not in capsys.readouterr().err


def test_departures_list_every_changed_value_and_the_written_notes():
    lines = registry.departures("fig02-resnet18", "cpu")
    steps = parameters('fig02-resnet18', 'cpu')['steps']
    assert f'`steps` = {steps} (paper: 2000)' in lines
    assert any("subset" in line for line in lines)
    assert not [l for l in registry.departures("fig04-x2", "paper") if l.startswith("`")]


def test_profiles_merge_common_values():
    cpu = parameters("fig05-cos10", "cpu")
    assert cpu["dataset"] == "synthetic-cos10" and cpu["lr"] == 0.02 and cpu["steps"] == 1400


def test_fingerprint_tracks_parameters_and_profile():
    assert runner.fingerprint("fig04-x2", "cpu") != runner.fingerprint("fig04-x2", "smoke")
    assert runner.fingerprint("fig04-x2", "cpu") == runner.fingerprint("fig04-x2", "cpu")
    assert runner.fingerprint("fig04-x2", "cpu") != runner.fingerprint("fig05-cos10", "cpu")


def test_up_to_date_pages_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BOOK", tmp_path)
    monkeypatch.setattr(runner, "LOGS", tmp_path / "logs")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    runner._decorate(nb, "theory", "smoke", parameters("theory", "smoke"), wall=6.0, day="2026-01-01")
    nb.cells[0].source = "# An outdated title\n\nand header"
    nbformat.write(nb, tmp_path / "theory.ipynb")
    assert runner.execute_page("theory", "smoke", jobs=1) is False
    assert "up to date" in (tmp_path / "logs" / "book-smoke.log").read_text()
    refreshed = nbformat.read(tmp_path / "theory.ipynb", as_version=4)
    assert "outdated" not in refreshed.cells[0].source  # the header follows experiments.yml
    assert "2026-01-01" in refreshed.cells[0].source and len(refreshed.cells) == 3


def test_a_changed_conclusion_re_executes_the_page(tmp_path, monkeypatch):
    """A code cell shows the conclusion with its numbers (`display.show_conclusion`) and the book
    check compares that output, so new conclusion prose needs a run, not a markdown rewrite."""
    import papermill

    monkeypatch.setattr(runner, "BOOK", tmp_path)
    monkeypatch.setattr(runner, "LOGS", tmp_path / "logs")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    runner._decorate(nb, "theory", "smoke", parameters("theory", "smoke"), wall=6.0, day="2026-01-01")
    nb.cells[-1].source = "## What our run shows\n\nan outdated conclusion"
    nbformat.write(nb, tmp_path / "theory.ipynb")
    before = (tmp_path / "theory.ipynb").read_text()
    assert runner._refresh_prose(tmp_path / "theory.ipynb", "theory", "smoke") is False
    assert (tmp_path / "theory.ipynb").read_text() == before  # left for a run

    class Executed(Exception):
        pass

    def execute(*args, **kwargs):
        raise Executed

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    with pytest.raises(Executed):
        runner.execute_page("theory", "smoke", jobs=1)
    assert "conclusion changed" in (tmp_path / "logs" / "book-smoke.log").read_text()


def test_decoration_adds_header_and_conclusion_and_hides_parameters():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Template"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("x = 2"), nbformat.v4.new_code_cell("print(x)")]
    nb.cells[0].metadata["tags"] = ["template-only"]
    nb.cells[1].metadata["tags"] = ["parameters"]
    nb.cells[2].metadata["tags"] = ["injected-parameters"]
    runner._decorate(nb, "fig04-x2", "cpu", parameters("fig04-x2", "cpu"), wall=90.0)
    runner._decorate(nb, "fig04-x2", "cpu", parameters("fig04-x2", "cpu"), wall=90.0)  # idempotent
    assert len(nb.cells) == 5
    assert nb.cells[0].source.startswith("# Figure 4") and "Profile:** `cpu`" in nb.cells[0].source
    assert "The paper's claim" in nb.cells[0].source and "1.5 min" in nb.cells[0].source
    assert all("remove-cell" in c.metadata["tags"] for c in nb.cells[1:3])
    assert nb.cells[-1].source.startswith("## What our run shows")
    assert nb.metadata["iteration_order"]["fingerprint"] == runner.fingerprint("fig04-x2", "cpu")


def test_toc_lists_only_executed_pages(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BOOK", tmp_path)
    (tmp_path / "fig05-cos10.ipynb").write_text("{}")
    toc = tmp_path / "_toc.yml"
    assert runner.write_toc(toc) == ["fig05-cos10"]
    text = toc.read_text()
    assert "book/fig05-cos10" in text and "book/fig04-x2" not in text and "root: book/index" in text
    assert "book/references" not in text  # no references page in tmp_path
    (tmp_path / "references.md").write_text("# References\n")
    runner.write_toc(toc)
    assert toc.read_text().rstrip().endswith("- file: book/references")


def test_templates_are_stored_with_their_figures():
    templates = sorted((registry.ROOT / "notebooks").glob("*.ipynb"))
    assert {"orders", "contraction"} <= {t.stem for t in templates}
    for template in templates:
        nb = nbformat.read(template, as_version=4)
        assert runner._has_figure(nb), f"{template.name} has no stored figure (shown or glued)"
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), template.name


def test_every_template_is_used_by_a_page():
    used = {entry["template"] for entry in load_pages().values()}
    stored = {t.stem for t in (registry.ROOT / "notebooks").glob("*.ipynb")}
    assert stored == used


def test_unknown_template_is_named():
    with pytest.raises(ValueError, match="unknown template 'nope'; templates are: contraction"):
        runner.refresh_template("nope")


def test_a_page_in_an_unknown_part_is_reported(tmp_path):
    registry = tmp_path / "registry.yml"
    registry.write_text(
        "pages:\n  lost:\n    template: orders\n    part: nowhere\n    title: t\n    claim: c\n"
        "    profiles: {smoke: {}, cpu: {}, paper: {}}\n")
    problems = check_registry(registry)
    assert problems == ["lost: unknown part 'nowhere'; parts are theory, practice, appendices, "
                        "extensions"]


def test_resolved_parameters_add_the_template_defaults_a_page_leaves_out():
    defaults = registry.template_defaults(registry.template_path("fig02-resnet18"))
    resolved = registry.resolved_parameters("fig02-resnet18", "cpu")
    assert "depth" not in parameters("fig02-resnet18", "cpu")  # irrelevant to a ResNet ...
    assert resolved["depth"] == defaults["depth"]              # ... yet part of its config
    assert resolved["model"] == "resnet18" != defaults["model"]  # the page's own values win


def test_the_header_shows_template_defaults_as_such():
    text = runner._header("fig02-resnet18", "cpu", parameters("fig02-resnet18", "cpu"), 60.0, "day")
    assert "| `model` | `\"resnet18\"` | this page |" in text
    # a ResNet never receives the MLP's fields (OrdersExperiment.config), and the header says so
    assert "| `depth` | `2` | template default, not used by this model |" in text
    assert "| `optimizer` | `\"sgd\"` | template default |" in text
    assert "`jobs`" not in text  # runtime parameters are not part of the science
    mlp = runner._header("fig04-x2", "cpu", parameters("fig04-x2", "cpu"), 60.0, "day")
    assert "| `init` | `\"torch\"` | template default |" in mlp


def test_the_rerun_box_quotes_only_estimates_of_the_current_parameters(tmp_path, monkeypatch):
    from iteration_order.book import costs
    path = tmp_path / "cost-estimates.json"
    digest = costs.parameters_digest("fig02-resnet18", "cpu")
    path.write_text(json.dumps({"device": "cpu", "machine": "m", "day": "d", "pages": {
        "fig02-resnet18": {"cpu": {"seconds": 3600.0, "parameters": digest},
                           "paper": {"seconds": 7200.0, "parameters": "another design"}}}}))
    monkeypatch.setattr(costs, "ESTIMATES", path)
    stored = costs.stored_estimates()
    assert costs.current_estimates("fig02-resnet18", stored) == ({"cpu": 3600.0}, ["paper"])
    text = runner._rerun_box("fig02-resnet18", "cpu")
    assert "`cpu` 1:00:00" in text and "2:00:00" not in text
    assert "from scratch on m, " in text  # the machine of the same file, read once
    assert "The stored estimate of `paper` was priced for other parameters" in text
    # an estimate stored before estimates named their parameters (a bare number) is not quoted
    path.write_text(json.dumps({"device": "cpu", "machine": "m", "day": "d",
                                "pages": {"fig02-resnet18": {"cpu": 3600.0}}}))
    assert costs.current_estimates("fig02-resnet18", costs.stored_estimates()) == ({}, ["cpu"])
    assert "1:00:00" not in runner._rerun_box("fig02-resnet18", "cpu")


# ------------------------------------------------------------------------------------------------
# Nothing from the registry is executed as code
# ------------------------------------------------------------------------------------------------

def _one_page_registry(tmp_path, smoke: str):
    path = tmp_path / "experiments.yml"
    path.write_text("pages:\n  evil:\n    template: orders\n    title: t\n    claim: c\n"
                    f"    profiles:\n      smoke: {{{smoke}}}\n      cpu: {{}}\n      paper: {{}}\n")
    return path


def test_a_parameter_name_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    key = f"steps; import os; os.system('touch {marker}'); y"
    monkeypatch.setattr(registry, "REGISTRY", _one_page_registry(tmp_path, f'"{key}": 1'))
    monkeypatch.setattr(runner, "BOOK", tmp_path / "book")
    monkeypatch.setattr(runner, "LOGS", tmp_path / "logs")
    (tmp_path / "book").mkdir()
    with pytest.raises(ValueError, match="nothing was run") as refused:
        runner.run_pages("smoke", only=["evil"])
    assert "a parameter name must be a Python identifier" in str(refused.value)
    with pytest.raises(ValueError, match="page 'evil' at profile 'smoke': a parameter name must be "
                                         "a Python identifier"):
        runner.execute_page("evil", "smoke", jobs=1)  # the runner's own check, before papermill
    assert not marker.exists() and list((tmp_path / "book").iterdir()) == []


def test_a_parameter_value_arrives_as_a_plain_string(tmp_path):
    """Strings that would close a quote and run code if they were pasted into the notebook reach
    the kernel unchanged (papermill writes their repr), and the template accepts them as text."""
    import papermill

    from test_validation import truncated_template

    marker = tmp_path / "m"
    values = {"dataset": f"x'); import os; os.system('touch {marker}'); ('",
              "init": f'x"); import os; os.system("touch {marker}"); ("',
              "optimizer": f"x\nimport os; os.system('touch {marker}')",
              "record": f"x\\'); import os; os.system('touch {marker}'); (\\'"}
    source = truncated_template("orders", tmp_path, "print(repr([dataset, init, optimizer, record]))")
    papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters=values,
                               kernel_name="python3", progress_bar=False)
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    printed = out.cells[-1].outputs[0]["text"].strip()
    assert printed == repr(list(values.values()))
    assert not marker.exists()


def test_a_page_executed_at_another_profile_is_replaced_only_when_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "BOOK", tmp_path)
    nb = nbformat.v4.new_notebook()
    runner._decorate(nb, "theory", "cpu", parameters("theory", "cpu"), wall=6.0, day="2026-01-01")
    nbformat.write(nb, tmp_path / "theory.ipynb")
    runner.check_overwrite("theory", "cpu")               # the same profile: a rerun
    runner.check_overwrite("theory", "smoke", force=True)  # asked for
    runner.check_overwrite("fig04-x2", "smoke")            # nothing executed yet
    with pytest.raises(ValueError, match="book/theory.ipynb was executed at profile 'cpu'; running "
                                         "it at profile 'smoke' would replace it. To replace it, add FORCE=1"):
        runner.check_overwrite("theory", "smoke")
    before = (tmp_path / "theory.ipynb").read_bytes()
    with pytest.raises(SystemExit):
        cli.main(["run", "--profile", "smoke", "--only", "theory"])
    assert (tmp_path / "theory.ipynb").read_bytes() == before


def test_book_params_round_trips_through_papermill(tmp_path):
    # what `book params` prints is what papermill injects, so a reader can rerun any page by hand
    import ast
    import os
    import subprocess
    import sys

    import yaml

    text = runner.page_parameters_yaml("fig04-x2", "smoke")
    (tmp_path / "params.yml").write_text(text)
    out = tmp_path / "page.ipynb"
    env = {**os.environ, "ITERATION_ORDER_RESULTS": str(tmp_path / "results")}
    subprocess.run([sys.executable, "-m", "papermill", str(registry.template_path("fig04-x2")),
                    str(out), "-f", str(tmp_path / "params.yml"), "--cwd", str(registry.ROOT),
                    "--no-progress-bar"], check=True, env=env, capture_output=True)
    nb = nbformat.read(out, as_version=4)
    [cell] = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    injected = {node.targets[0].id: ast.literal_eval(node.value)
                for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)}
    assert injected == yaml.safe_load(text)
    assert injected["profile"] == "smoke" and injected["dataset"] == "synthetic-x2"


def test_book_params_names_a_bad_page():
    with pytest.raises(SystemExit):
        cli.main(["params", "nope", "--profile", "paper"])


def test_departures_name_the_papers_value_only_where_the_paper_states_it():
    # the paper has no momentum page and no Theorem 2.6 experiment: no value is the paper's
    for name in ("momentum-x2", "theorem-2-6", "appendix-c-lie-bracket", "sharpness"):
        assert not [l for l in registry.departures(name, "cpu") if "(paper: " in l], name
    lines = registry.departures("fig02-resnet18", "cpu")
    assert "`eval_test_size` = 500 (the paper gives no value; our `paper` profile uses 0)" in lines
    assert "`lr` = 0.1 (paper: 0.025)" in lines
    assert "`model`" not in " ".join(lines)  # unchanged values are not departures
    assert "`seeds`" not in " ".join(lines)


def test_how_a_page_runs_is_never_a_departure():
    for name in load_pages():
        for profile in ("smoke", "cpu"):
            assert not [l for l in registry.departures(name, profile)
                        if l.startswith(("`engine`", "`data_root`", "`download`"))], name


def _prose_fields(entry: dict):
    """Every text of a page entry that becomes prose: title, claim, notes, conclusions."""
    yield entry.get("title", "")
    yield entry.get("claim", "")
    for group in ("notes", "conclusion"):
        for value in (entry.get(group) or {}).values():
            yield from (value if isinstance(value, list) else [value])


# Sub- and superscripts written as plain text (θ_0, λ_max, (1-h)^(n-1), Σ_{i≠j}, ‖x‖, T_1∘T_2)
_PLAIN_MATH = re.compile(r"\w\^|\^\(|_\{|(?<![\w`])[A-Za-zθλ∇]_[0-9A-Za-z]|‖|∘|Σ")


def test_math_in_every_prose_field_is_typeset():
    found = {}
    for name, entry in load_pages().items():
        for text in _prose_fields(entry):
            plain = re.sub(r"\$[^$]*\$|\{[a-z:]+\}`[^`]*`|`[^`]*`", " ", str(text))
            hits = _PLAIN_MATH.findall(plain)
            if hits:
                found.setdefault(name, []).extend(hits)
    assert found == {}
