"""A page at the paper profile rendered on a machine without CUDA from trajectories a GPU computed
elsewhere (a fake "cuda" results folder made here by copying CPU results under the CUDA name, in a
temporary folder only), its place in the book next to the cpu page, and the runner's settings."""
import json

import nbformat
import pytest
import torch

from iteration_order import Runtime
from iteration_order.cache import store_result
from iteration_order.book import cli, registry, runner
from iteration_order.book.orders import OrdersExperiment
from iteration_order.book.provenance import MixedDevicesError, provenance
from iteration_order.parallel import DEVICE_ENV, EXECUTOR_ENV, SHARDS_ENV

REGISTRY = """
pages:
  tiny:
    template: orders
    title: "Tiny: forward against backward"
    claim: "Backward fluctuates less."
    common: {dataset: synthetic-x2, model: mlp, depth: 2, width: 8, lr: 0.02, seeds: [0, 1]}
    profiles:
      smoke: {steps: 20}
      cpu: {steps: 20, record: "every:5"}
      paper: {steps: 24, record: "every:3"}
"""


@pytest.fixture
def book(tmp_path, monkeypatch):
    """A one-page registry, a book folder and a machine without CUDA (also in the page kernels)."""
    (tmp_path / "experiments.yml").write_text(REGISTRY)
    monkeypatch.setattr(registry, "REGISTRY", tmp_path / "experiments.yml")
    monkeypatch.setattr(runner, "BOOK", tmp_path / "book")
    monkeypatch.setattr(runner, "LOGS", tmp_path / "logs")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the kernels see no GPU either
    for name in (DEVICE_ENV, EXECUTOR_ENV, SHARDS_ENV, "ITERATION_ORDER_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def fake_cuda_results(source, target):
    """CPU results under the CUDA name, their recorded device rewritten (in a test's temporary
    folder only: fabricated GPU results are never committed)."""
    target.mkdir(parents=True)
    for path in source.glob("*-cpu.json"):
        result = json.loads(path.read_text())
        result["runtime"]["device"] = "cuda:0"
        # stored with the digest of its new content, as a GPU machine would have written it
        store_result(target / path.name.replace("-cpu.json", "-cuda.json"), result)


def glued(nb, key):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                data = output["data"]
                return next(v for k, v in data.items() if k.endswith("text/markdown"))
    raise AssertionError(f"nothing glued as {key!r}")


def test_a_paper_page_renders_without_cuda_from_the_gpus_results(book, monkeypatch):
    experiment = OrdersExperiment.from_parameters(registry.resolved_parameters("tiny", "paper"))
    experiment.run(runtime=Runtime(device="cpu", threads=1, results_dir=book / "cpu",
                                   progress=False))
    fake_cuda_results(book / "cpu", book / "cuda")
    monkeypatch.setenv("ITERATION_ORDER_RESULTS", str(book / "cuda"))
    before = {p.name: p.stat().st_mtime_ns for p in (book / "cuda").iterdir()}

    assert runner.run_pages("paper", only=["tiny"]) == ["tiny"]
    # nothing computed or rewritten, and the runner's settings did not outlive it
    assert {p.name: p.stat().st_mtime_ns for p in (book / "cuda").iterdir()} == before
    assert DEVICE_ENV not in __import__("os").environ
    page = book / "book" / "paper" / "tiny.ipynb"
    assert page.is_file() and not (book / "book" / "tiny.ipynb").exists()
    nb = nbformat.read(page, as_version=4)
    meta = nb.metadata["iteration_order"]
    assert meta["profile"] == "paper" and meta["rendered_from"] == "cuda"
    header = nb.cells[0].source
    assert "**Profile:** `paper`" in header
    assert "from stored trajectories that were computed on `cuda` elsewhere" in header
    assert "**Produced by:** {glue:md}`provenance`" in header
    produced = glued(nb, "provenance")
    assert "runs: 4 computed on cuda with the sequential engine (torch " in produced
    assert "on cpu" not in produced

    # the cpu page of the same name: nested under the paper page, the two linked
    cpu = nbformat.v4.new_notebook()
    runner._decorate(cpu, "tiny", "cpu", registry.parameters("tiny", "cpu"), wall=6.0)
    nbformat.write(cpu, book / "book" / "tiny.ipynb")
    runner._refresh_prose(page, "tiny", "paper")
    paper_header = nbformat.read(page, as_version=4).cells[0].source
    assert "[this page as a 2-core CPU runs it](../tiny.ipynb)" in paper_header
    runner._refresh_prose(book / "book" / "tiny.ipynb", "tiny", "cpu")
    cpu_header = nbformat.read(book / "book" / "tiny.ipynb", as_version=4).cells[0].source
    assert "[this page at the `paper` profile](paper/tiny.ipynb)" in cpu_header
    assert "rendered" not in cpu_header
    runner.write_toc(book / "_toc.yml")
    assert ("      - file: book/paper/tiny\n        sections:\n          - file: book/tiny\n"
            '            title: "At the cpu profile"\n') in (book / "_toc.yml").read_text()

    # and the book builds strictly with it, as CI's `make build-book` does: this machine has no
    # GPU, the page holds the GPU's runs
    built = strict_build(book)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    html = (book / "_build" / "html" / "book" / "paper" / "tiny.html").read_text()
    assert "computed on cuda with the sequential engine" in html
    assert (book / "_build" / "html" / "book" / "tiny.html").is_file()


def strict_build(folder):
    """`jupyter-book build` of ``folder`` with the repository's configuration, warnings as errors
    (a missing glue key or reference too), executing nothing."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    for name in ("_config.yml", "references.bib"):
        shutil.copy(registry.ROOT / name, folder / name)
    # the bibliography the headers cite, closing the book as in the repository's table of contents
    shutil.copy(registry.ROOT / "book" / "references.md", folder / "book" / "references.md")
    runner.write_toc(folder / "_toc.yml")
    (folder / "book" / "index.md").write_text("# A one-page book\n\nThe paper profile, rendered "
                                              "here from a GPU's results.\n")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    return subprocess.run([str(jupyter_book), "build", str(folder), "--warningiserror",
                           "--nitpick", "--keep-going"], capture_output=True, text=True,
                          timeout=600)


def test_the_toc_is_unchanged_while_only_cpu_pages_exist(book):
    (book / "book").mkdir()
    nbformat.write(nbformat.v4.new_notebook(), book / "book" / "tiny.ipynb")
    runner.write_toc(book / "_toc.yml")
    assert "      - file: book/tiny\n" in (book / "_toc.yml").read_text()
    assert "paper" not in (book / "_toc.yml").read_text() and "sections" not in \
        (book / "_toc.yml").read_text()


def test_the_runners_settings_are_checked_before_anything_runs(book, monkeypatch, capsys):
    settings, rendered = runner._run_settings("paper", "ray", 4, None)
    assert settings == {EXECUTOR_ENV: "ray", SHARDS_ENV: "4", DEVICE_ENV: "cuda",
                        "ITERATION_ORDER_CACHE": "only"} and rendered == "cuda"
    assert runner._run_settings("cpu", None, None, None) == (
        {EXECUTOR_ENV: "local", SHARDS_ENV: "1"}, None)
    assert runner._run_settings("paper", None, None, "cpu")[1] is None  # computed here, asked for
    with pytest.raises(ValueError, match="shards must be an integer >= 1"):
        runner.run_pages("paper", only=["tiny"], shards=0)
    with pytest.raises(ValueError, match="unknown executor 'slurm'; allowed: local, ray"):
        runner.run_pages("paper", only=["tiny"], executor="slurm")
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, cuda:N; got 'gpu'"):
        runner.run_pages("paper", only=["tiny"], device="gpu")
    # the resolver's forms, all of them: a second GPU is named as the resolver names it
    assert runner._run_settings("cpu", None, None, "cuda:1")[0][DEVICE_ENV] == "cuda:1"
    monkeypatch.setenv("ITERATION_ORDER_CACHE", "refresh")
    with pytest.raises(ValueError, match="can only be rendered from stored results"):
        runner.run_pages("paper", only=["tiny"])
    monkeypatch.setenv(SHARDS_ENV, "many")
    with pytest.raises(SystemExit) as exit_:  # one paragraph, no usage banner
        cli.main(["run", "--profile", "cpu", "--only", "tiny"])
    assert "$ITERATION_ORDER_SHARDS='many' is not a number of shards" in str(exit_.value.code)
    assert not (book / "book").exists()


def test_a_page_never_shows_runs_of_two_devices():
    runs = [{"engine": "sequential", "runtime": {"device": "cpu", "torch": "2.14.1"}},
            {"engine": "batched", "runtime": {"device": "cuda:0", "torch": "2.14.1"}}]
    with pytest.raises(MixedDevicesError, match=r"several devices \(cpu, cuda\)"):
        provenance(runs)
    assert "1 computed on cuda with the batched engine" in provenance(runs[1:])


def test_a_page_is_checked_against_the_siblings_of_its_own_book(tmp_path):
    """`verify` re-renders a header's link to the page at the other scale from the book folder
    that holds the page, not from the repository's book/: a copy checked elsewhere (a test's
    temporary book) has no sibling there, whatever book/paper/ holds."""
    assert runner.book_root(tmp_path / "b" / "paper" / "x.ipynb", "paper") == tmp_path / "b"
    assert runner.book_root(tmp_path / "b" / "x.ipynb", "cpu") == tmp_path / "b"
    assert runner._sibling("x", "cpu", tmp_path / "b") == tmp_path / "b" / "paper" / "x.ipynb"
    assert runner._sibling("x", "paper", tmp_path / "b") == tmp_path / "b" / "x.ipynb"
    assert runner._sibling("x", "cpu") == runner.BOOK / "paper" / "x.ipynb"
    # a paper page in the repository's book has a cpu sibling there, and none in an empty book
    assert runner._versions("fig04-x2", "paper")
    assert runner._versions("fig04-x2", "paper", tmp_path / "empty") == ""
