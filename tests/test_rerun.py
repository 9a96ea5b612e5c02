"""A page rerun by hand, as a user would (issue 20): papermill with `book params`, the notebook it
writes opened without the book, the commands' errors, and the main guard of `run_many`."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from iteration_order.book.display import conclusion_markdown, render_roles
from iteration_order.book.registry import ROOT

PY = sys.executable


def _params(page: str, profile: str, folder: Path) -> Path:
    out = folder / "params.yml"
    text = subprocess.run([PY, "-m", "iteration_order.book", "params", page, "--profile", profile],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    out.write_text(text)
    return out


def _papermill(template: str, params: Path, out: Path, env: dict, *extra: str) -> None:
    subprocess.run([PY, "-m", "papermill", str(ROOT / "notebooks" / f"{template}.ipynb"),
                    str(out), "-f", str(params), "--cwd", str(ROOT), "--no-progress-bar",
                    *extra], check=True, capture_output=True, env=env)


def _outputs(nb, key: str) -> list[str]:
    return [output["data"][key] for cell in nb.cells for output in cell.get("outputs", [])
            if key in output.get("data", {})]


def _glued(nb, name: str):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                return output["data"]["application/papermill.record/text/plain"]
    raise KeyError(name)


def test_quick_rerun_shows_figure_conclusion_and_a_finite_spread_ratio(tmp_path):
    """`book params fig04-x2 --profile quick` then papermill: the notebook itself shows the
    figure (a displayed PNG, not only a glued one), the tables and the conclusion with its numbers,
    and the quick profile tests the claim (a finite spread ratio on 30 shared tail steps)."""
    env = {**os.environ, "ITERATION_ORDER_RESULTS": str(tmp_path / "results")}
    out = tmp_path / "fig04-x2.ipynb"
    _papermill("orders", _params("fig04-x2", "quick", tmp_path), out, env, "-p", "jobs", "2")
    nb = nbformat.read(out, as_version=4)
    assert _outputs(nb, "image/png"), "no figure is displayed in the notebook"
    assert len(_outputs(nb, "text/html")) >= 2  # the stability table and the claims
    shown = "\n".join("".join(md) for md in _outputs(nb, "text/markdown"))
    assert "## What our run shows" in shown
    assert "of 5 seeds" in shown and "glue:" not in shown
    ratio = float(_glued(nb, "backward_train_spread_gm"))
    assert math.isfinite(ratio) and ratio > 0


def test_a_rerun_by_hand_leaves_the_committed_results_test_green(monkeypatch):
    """The README's way writes the rerun's trajectories into results/ as untracked files; the
    test that results/ holds only what the pages load judges the committed files only."""
    from test_check_book import test_every_committed_result_is_loaded_by_an_executed_page as check
    results = ROOT / "results"
    before = set(results.rglob("*"))
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        env = {k: v for k, v in os.environ.items() if k != "ITERATION_ORDER_RESULTS"}
        try:
            _papermill("orders", _params("fig04-x2", "smoke", scratch), scratch / "out.ipynb", env)
            added = set(results.rglob("*")) - before
            assert any(p.name.endswith("-cpu.json") for p in added)  # it did write there
            check(monkeypatch)
        finally:
            for path in sorted(set(results.rglob("*")) - before, reverse=True):
                path.unlink() if path.is_file() else path.rmdir()


def test_make_reproduce_refusal_is_one_paragraph_with_advice_that_works_from_make():
    run = subprocess.run(["make", "--no-print-directory", "reproduce", "PROFILE=smoke",
                          "PAGES=fig04-x2"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    assert "usage:" not in run.stderr and "Traceback" not in run.stderr
    assert "FORCE=1" in run.stderr


def test_the_quick_profile_is_refused_by_the_book_runner_with_the_papermill_way():
    run = subprocess.run([PY, "-m", "iteration_order.book", "run", "--profile", "quick", "--only",
                          "fig04-x2"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "usage:" not in run.stderr
    assert "papermill" in run.stderr and "never becomes a page of the book" in run.stderr


def test_run_many_without_main_guard_says_so_in_one_line(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from iteration_order import Runtime, TrajectoryConfig
        from iteration_order.parallel import run_many
        configs = [TrajectoryConfig(depth=1, width=4, steps=5, seed=s) for s in range(2)]
        run_many(configs, Runtime(results_dir={str(tmp_path / 'r')!r}), jobs=2)
    """))
    run = subprocess.run([PY, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("iteration_order.parallel.MissingMainGuard:")
    assert "line 5" in last and 'if __name__ == "__main__":' in last
    assert "BrokenProcessPool" not in run.stderr


def test_the_main_guard_check_accepts_a_guarded_call(tmp_path):
    script = tmp_path / "guarded.py"
    script.write_text(textwrap.dedent("""
        from iteration_order.parallel import _main_guard_problem
        def go():
            return _main_guard_problem()
        print("top", go())
        if __name__ == "__main__":
            print("guarded", go())
    """))
    run = subprocess.run([PY, str(script)], capture_output=True, text=True, check=True)
    top, guarded = run.stdout.strip().splitlines()
    assert top.startswith("top run_many starts worker processes") and "line 5" in top
    assert guarded == "guarded None"


def test_roles_render_to_plain_text():
    values = {"ratio": 0.12345, "k": 5, "evidence": "5 of 5 seeds"}
    text = ("{glue:text}`ratio:.2f` and {glue:text}`k` ({glue:text}`evidence`), "
            "{doc}`the summary <summary>`, {cite:t}`dherin2025training`, {glue:text}`gone:.1f`")
    assert render_roles(text, values) == ("0.12 and 5 (5 of 5 seeds), the summary, "
                                          "Dherin et al. (2025), [gone: not computed]")


def test_a_profile_without_written_conclusion_lists_the_measured_claims():
    values = {"backward_train_spread_evidence": "4 of 5 seeds (p = 0.38)",
              "backward_train_spread_interval": "geometric mean 0.5"}
    text = conclusion_markdown("fig04-x2", "quick", values)
    assert "No conclusion is written for page `fig04-x2` at the `quick` profile" in text
    assert "- `backward_train_spread`: 4 of 5 seeds (p = 0.38); geometric mean 0.5" in text
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        conclusion_markdown("fig04-x2", "fast", values)


def test_every_template_shows_its_conclusion_and_takes_the_page_name():
    for template in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(template.read_text())
        source = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert "show_conclusion(page, profile)" in source, template.name
        assert "from myst_nb import glue" not in source, template.name  # display.glue shows figures


def _figure(values):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], values, label="backward")
    ax.bar([0, 1], [1.0, 2.0])
    ax.set_title("a title")
    plt.close(fig)
    return fig


def test_the_data_digest_follows_what_a_figure_plots():
    from iteration_order.book.display import figure_data_digest
    assert figure_data_digest(_figure([1.0, 2.0, 3.0])) == figure_data_digest(_figure([1.0, 2.0, 3.0]))
    assert figure_data_digest(_figure([1.0, 2.0, 3.0])) != figure_data_digest(_figure([1.0, 2.5, 3.0]))


def test_verify_catches_a_replaced_figure_image():
    import base64
    from pathlib import Path as P

    from iteration_order.book.display import png_digest
    from iteration_order.book.verify import ExecutedPage, figure_problems
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfirst image").decode()

    def page(stored_png, with_digest=True):
        outputs = [nbformat.v4.new_output("display_data", data={
            "application/papermill.record/image/png": stored_png},
            metadata={"scrapbook": {"name": "curves", "mime_prefix": "application/papermill.record/"}})]
        if with_digest:
            outputs.append(nbformat.v4.new_output("display_data", data={
                "application/papermill.record/text/plain": repr(png_digest(png))},
                metadata={"scrapbook": {"name": "curves__png",
                                        "mime_prefix": "application/papermill.record/"}}))
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("draw()", outputs=outputs)]
        return ExecutedPage("fig04-x2", P("fig04-x2.ipynb"), "cpu", {}, nb)

    assert figure_problems(page(png)) == []
    other = base64.b64encode(b"\x89PNG\r\n\x1a\nanother image").decode()
    assert "is not the one its execution drew" in figure_problems(page(other))[0]
    assert "has no digest" in figure_problems(page(png, with_digest=False))[0]
