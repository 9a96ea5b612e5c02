"""`python -m iteration_order.gpu_report --tiny`: the GPU report's code run on the CPU at tiny
sizes, so that the command cannot rot while no GPU is at hand. Its numbers are not asserted
(timing is noise here); that every section is filled, the JSON well formed and bad input refused
are."""
import gzip
import json
import math

import numpy as np
import pytest

from iteration_order import gpu_report
from iteration_order.gpu_report import SECTIONS, TITLES, fashionmnist_root


def _idx(path, array: np.ndarray) -> None:
    """An idx file as the official FashionMNIST ones are written (big-endian header), gzipped."""
    kind = 3 if array.ndim == 3 else 1
    header = np.array([0x800 + kind, *array.shape], dtype=">i4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mini_fashionmnist(tmp_path_factory):
    """A miniature FashionMNIST as a GPU machine is sent it: the four .gz files (here 256 + 128
    random images), in FashionMNIST/raw/ under the data root."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("t10k", 128)):
        _idx(raw / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def test_the_tiny_report_fills_every_section_and_writes_strict_json(mini_fashionmnist, tmp_path,
                                                                     capsys):
    out = tmp_path / "report"
    # a generous budget: on a busy machine the tiny budget would leave families out
    result = gpu_report.main(["--tiny", "--out", str(out), "--data-root", str(mini_fashionmnist),
                              "--budget", "600"])
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["gpu-report-cpu-tiny.json",
                                                     "gpu-report-cpu-tiny.md"]
    text = (out / "gpu-report-cpu-tiny.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert report["finished"] is True
    assert report["info"]["tiny"] is True and report["info"]["torch"]
    assert {n: s["status"] for n, s in report["sections"].items()} == dict.fromkeys(SECTIONS,
                                                                                    "done")
    sections = {n: s["data"] for n, s in report["sections"].items()}
    # 1: every family, both engines, a finite difference
    families = sections["agreement"]["families"]
    assert len(families) == 9 and not sections["agreement"]["skipped"]
    assert all(math.isfinite(f["largest relative difference"]) for f in families.values())
    # 2: both page-scale cases with their ratios
    cases = sections["page-scale"]["cases"]
    assert len(cases) == 2
    assert cases["FashionMNIST MLP 5x500, batch 8"]["batched timed on"] == \
        "the engine over the window"
    assert all(c["batched / hand loop (speed)"] > 0 for c in cases.values())
    # 3: the whole (miniature) train and test sets evaluated
    assert sections["evaluation"]["examples"] == 256 + 128
    # 4: seed 0 forward and backward ran to the end, against a prediction
    fig = sections["fig07"]
    assert fig["forward"]["finished"] and fig["backward"]["finished"]
    assert set(fig["predicted / measured (time)"]) == {"forward", "backward"}
    assert fig["seeds"] == 5 and "experiments.yml" in fig["source"]
    # 5: the table
    assert "| fig07-fashionmnist |" in sections["cost-table"]["table"]
    assert sections["cost-table"]["total seconds"] > 0
    # one line per target, each measured (met or not), printed too
    assert len(report["targets"]) == 5 and all(t["met"] is not None for t in report["targets"])
    assert all(t["line"] in printed for t in report["targets"])
    md = (out / "gpu-report-cpu-tiny.md").read_text()
    assert all(f"## {TITLES[n]}" in md for n in SECTIONS)
    assert "Not run yet" not in md and "FAILED" not in md and "A tiny run" in md
    assert result["md"] == str(out / "gpu-report-cpu-tiny.md")


def test_the_fallback_copy_of_figure_7_is_the_registry(monkeypatch):
    """Without the book layer (no pyyaml), section 4 uses the module's copy of Figure 7's paper
    profile: it must be the registry's."""
    forward, backward, seeds, engine, source = gpu_report.fig07_configs(gpu_report.GPU)
    assert "experiments.yml" in source
    monkeypatch.setitem(__import__("sys").modules, "iteration_order.book.costs", None)
    copy = gpu_report.fig07_configs(gpu_report.GPU)
    assert copy[:4] == (forward, backward, seeds, engine)
    assert "not importable" in copy[4]


def test_gzipped_files_are_found_and_missing_ones_named(mini_fashionmnist, tmp_path):
    root = fashionmnist_root(mini_fashionmnist, tmp_path / "scratch")
    assert root == tmp_path / "scratch"
    assert (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == \
        16 + 256 * 28 * 28
    with pytest.raises(FileNotFoundError, match="FashionMNIST not found under --data-root"):
        fashionmnist_root(tmp_path / "scratch" / "FashionMNIST", tmp_path / "other")


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device must be one of auto, cpu, cuda, cuda:N; got 'tpu'"),
    (["--tiny", "--only", "agreement", "speed"],
     "--only: unknown section(s) 'speed'; allowed: agreement, page-scale, evaluation, fig07, "
     "cost-table"),
    (["--tiny", "--budget", "0"], "--budget 0.0 must be a number of seconds > 0"),
    (["--tiny", "--budget", "soon"], "argument --budget: invalid float value: 'soon'"),
    (["--tiny", "--data-root", "/no/such/folder"], "--data-root '/no/such/folder' is not a folder"),
])
def test_bad_input_is_refused_naming_the_value_and_what_is_allowed(argv, message, capsys):
    with pytest.raises(SystemExit):
        gpu_report.main(argv)
    assert message in capsys.readouterr().err


def test_without_cuda_the_full_report_asks_for_tiny(capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit):
        gpu_report.main(["--device", "cpu"])
    assert "run with --tiny for the CPU check" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_report.main(["--device", "cuda"])
    assert "CUDA is not available here" in capsys.readouterr().err
