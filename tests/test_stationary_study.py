"""Theorem 2.6 page's study: determinism, cache, record grid, bad input."""
import dataclasses
import json

import numpy as np
import pytest

from iteration_order import Runtime
from iteration_order.book import stationary as st


def _at(folder) -> Runtime:
    """A CPU runtime caching in ``folder`` (every study runs on a `Runtime`)."""
    return Runtime(device="cpu", results_dir=folder, progress=False)

SMALL = dict(chains=20, steps=24, early_step=2, grid_points=6, trace_chains=2, wrong_scale=1.2,
             alpha=0.05, seed=0, quadratic_h=0.1, quadratic_noise=1.0, quadratic_theta0=3.0,
             regression_points=64, regression_dim=3, regression_batch=16, regression_h=0.1,
             network_points=32, network_span=2.0, network_teacher=(1.0, 0.5, 1.0),
             network_noise=0.05, network_batch=8, network_h=0.5, network_theta0=(2.0, 0.0, 0.5))


def small_study(**changes) -> st.StationaryStudy:
    return st.StationaryStudy(**{**SMALL, **changes})


# ---- the study: determinism, cache, bad input ----------------------------------------------------

def test_two_runs_give_identical_results_and_the_cache_is_reused(tmp_path, monkeypatch):
    study = small_study()
    first = st.run_study(study, _at(tmp_path / "a"))
    second = st.run_study(study, _at(tmp_path / "b"))

    def numbers(result):  # everything but the wall time
        return json.dumps({name: {k: v for k, v in r.items() if k != "compute_seconds"}
                           for name, r in result.items()}, sort_keys=True)
    assert numbers(first) == numbers(second)
    assert set(first) == set(st.PROBLEMS)

    def fail(*_):
        raise AssertionError("recomputed despite the cache")
    monkeypatch.setattr(st, "_run_problem", fail)
    assert st.run_study(study, _at(tmp_path / "a")) == first
    other = dataclasses.replace(study, seed=1)
    with pytest.raises(AssertionError, match="recomputed"):
        st.run_study(other, _at(tmp_path / "a"))


def test_record_grid_is_sorted_and_leaves_room_for_the_next_step():
    grid = st.record_grid(1000, 40)
    assert grid == sorted(set(grid)) and grid[0] == 1 and grid[-1] == 999


@pytest.mark.parametrize("change, message", [
    ({"quadratic_h": 0.0}, "quadratic_h"), ({"quadratic_h": 2.0}, "quadratic_h"),
    ({"quadratic_h": -0.5}, "quadratic_h"), ({"chains": 5}, "chains"),
    ({"steps": 0}, "steps"), ({"steps": -3}, "steps"), ({"early_step": 12}, "early_step"),
    ({"early_step": 0}, "early_step"), ({"trace_chains": 21}, "trace_chains"),
    ({"wrong_scale": 1.0}, "wrong_scale"), ({"alpha": 1.5}, "alpha"),
    ({"network_theta0": (1.0, 2.0)}, "network_theta0"),
    ({"regression_batch": 2}, "regression_batch"),
])
def test_bad_parameters_raise_value_errors_that_name_them(change, message):
    with pytest.raises(ValueError, match=message):
        small_study(**change)


# ---- independent replicates of the main comparison -----------------------------------------------

def test_replicate_seeds_are_deterministic_distinct_and_new():
    seeds = st.replicate_seeds(0, 50)
    assert seeds == st.replicate_seeds(0, 50)  # the same page seed, the same replicates
    assert st.replicate_seeds(0, 3) == seeds[:3]  # adding replicates keeps the earlier ones
    assert len(set(seeds)) == 50 and 0 not in seeds
    assert not set(seeds) & set(st.replicate_seeds(1, 50))  # another page seed, other replicates
    with pytest.raises(ValueError, match="replicates"):
        st.replicate_seeds(0, 0)


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    study = small_study()
    folder = tmp_path_factory.mktemp("replicates")
    return study, folder, st.run_replicates(study, 3, chains=25, runtime=_at(folder))


def test_a_replicate_is_the_main_comparison_rerun_with_its_own_seed(replicated):
    study, folder, replicates = replicated
    assert replicates["seeds"] == st.replicate_seeds(study.seed, 3) and replicates["chains"] == 25
    for r in (0, 2):
        main = st.run_study(dataclasses.replace(study, seed=replicates["seeds"][r], chains=25),
                            _at(folder))
        for name in st.PROBLEMS:
            expected = next(t for t in main[name]["tests"] if t["key"] == "main")
            got = replicates["problems"][name]["tests"][r]
            assert got["D"] == pytest.approx(expected["D"], abs=1e-12)
            assert got["p"] == pytest.approx(expected["p"], rel=1e-9)
            assert got["rejected"] == expected["rejected"]


def test_replicates_draw_new_maps_and_chains_and_are_cached(replicated, monkeypatch):
    study, folder, replicates = replicated
    first, second = (dataclasses.replace(study, seed=s, chains=25) for s in replicates["seeds"][:2])
    for name in st.PROBLEMS:  # KS p-values of 25 chains are discrete: compare the samples
        for a, b in zip(st.final_samples(name, first), st.final_samples(name, second)):
            assert not np.allclose(a, b), name
    # the least-squares maps themselves differ between replicates, not only the chains
    maps = [st._affine_problem("regression", dataclasses.replace(study, seed=s))[2]["b"]
            for s in replicates["seeds"][:2]]
    assert not np.allclose(*maps)

    def fail(*_):
        raise AssertionError("recomputed despite the cache")
    monkeypatch.setattr(st, "final_samples", fail)
    assert st.run_replicates(study, 3, chains=25, runtime=_at(folder)) == replicates
    with pytest.raises(AssertionError, match="recomputed"):
        st.run_replicates(study, 4, chains=25, runtime=_at(folder))


def test_replicate_table_counts_rejections_and_their_binomial_tail():
    def test(rejected):
        return {"D": [0.1], "p": [0.01 if rejected else 0.5], "rejected": rejected}
    replicates = {"seeds": [1, 2, 3], "chains": 40, "problems": {
        "quadratic": {"tests": [test(False)] * 3},
        "regression": {"tests": [test(True), test(False), test(True)]},
        "network": {"tests": [test(True)] * 3}}}
    table = st.replicate_table(replicates, 0.1)
    assert table["rejections"].tolist() == [0, 2, 3]
    assert table["expected (R × alpha)"].tolist() == pytest.approx([0.3] * 3)
    # P(X >= k), X ~ Binomial(3, 0.1): 1, 3·0.01·0.9 + 0.001, 0.001
    assert table["P(at least this many | equal laws)"].tolist() == pytest.approx(
        [1.0, 0.028, 0.001], rel=1e-12)


def test_final_samples_refuses_an_unknown_problem():
    with pytest.raises(ValueError, match="problem"):
        st.final_samples("cubic", small_study())


# ---- the page's prose: captions and glued numbers ------------------------------------------------

def test_every_glue_key_of_the_conclusion_and_the_template_is_computed(replicated):
    import re

    import nbformat

    from iteration_order.book.registry import ROOT, load_pages
    study, folder, replicates = replicated
    results = st.run_study(study, _at(folder))
    numbers = st.page_numbers(study, results, replicates)
    assert numbers["replicates"] == 3 and numbers["rep_tests"] == 9
    assert numbers["network_rep_rejections"] == sum(
        t["rejected"] for t in replicates["problems"]["network"]["tests"])
    glued_in_template = {"provenance", "replicates_figure", "ks_distance_figure", "trace_figure",
                         *(f"histogram_{name}" for name in st.PROBLEMS)}
    glued_in_template |= {f"{key}_caption" for key in set(glued_in_template) - {"provenance"}}
    entry = load_pages()["theorem-2-6"]
    template = nbformat.read(ROOT / "notebooks" / "stationary.ipynb", as_version=4)
    prose = [entry["conclusion"]["cpu"]] + [c.source for c in template.cells
                                             if c.cell_type == "markdown"]
    used = {key for text in prose
            for key in re.findall(r"\{glue:(?:text|md|figure)\}`?\s*([A-Za-z0-9_]+)", text)}
    assert used, "no glue reference found: the pattern is wrong"
    assert used - set(numbers) - glued_in_template == set()


def test_captions_say_the_paper_has_no_such_figure_and_name_the_profile(replicated):
    study, _, replicates = replicated
    for kind, extra in (("histogram", {"name": "network"}), ("ks_distance", {}), ("trace", {}),
                        ("replicates", {"replicates": replicates})):
        caption = st.figure_caption(kind, study, "cpu", **extra)
        assert "Not a figure of the paper" in caption and "Profile `cpu`" in caption
    assert "3 independent replicates" in st.figure_caption("replicates", study, "cpu",
                                                            replicates=replicates)
    with pytest.raises(ValueError, match="figure"):
        st.figure_caption("scatter", study, "cpu")
    with pytest.raises(ValueError, match="replicates"):
        st.figure_caption("replicates", study, "cpu")
