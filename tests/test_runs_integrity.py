"""Runaway and failing runs (issue 21, item 4): devices checked like every other parameter, absurd
sizes refused before anything is built, long runs only with consent, an unreachable Ray address
a quick clear error. (A failed result write: tests/test_cache_integrity.py.)"""
import textwrap
import time

import pytest

from iteration_order.book import studies
from iteration_order.book.studies import check_registry

import iteration_order.parallel as parallel
from iteration_order import Runtime, TrajectoryConfig
from iteration_order.book import cli, costs, runner
from iteration_order.parallel import LongRunError, run_many
from iteration_order.devices import check_device
from iteration_order.validation import (MAX_RECORDED, MAX_STEPS, record_points_bound,
                                        size_problems)

TINY = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, lr=0.01, steps=6,
                        order="backward", record="every:2")


def runtime(folder, **kw):
    return Runtime(device="cpu", threads=1, results_dir=folder, progress=False, **kw)


@pytest.mark.parametrize("device", ["tpu", "cuda:abc", "cuda:", "CPU", "cuda:0:1", 3, None])
def test_a_device_that_is_not_one_is_refused_naming_the_value(device):
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, cuda:N; got"):
        check_device("device", device)


@pytest.mark.parametrize("device", ["tpu", "cuda:abc"])
def test_book_cost_names_a_bad_device_without_a_torch_traceback(device, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["cost", "--device", device, "--only", "fig04-x2"])
    # one paragraph (SystemExit prints it to stderr), no usage banner, no torch traceback
    message = str(exit_.value.code)
    assert message.startswith("error: --device must be one of auto, cpu, cuda, cuda:N; got "
                              f"'{device}'")
    assert "Traceback" not in message + capsys.readouterr().err


def test_record_bounds_are_computed_without_enumerating_steps():
    start = time.perf_counter()
    assert record_points_bound("log:10000000000", 1000) == 10 ** 10 + 1  # what it would build
    assert record_points_bound("every:1", 10 ** 12) == 10 ** 12 + 1
    assert record_points_bound("every:40+range:1500:2000:10", 2000) == 51 + 51
    assert record_points_bound("at:1,2,3", 10) == 3
    assert record_points_bound("nonsense", 10) is None
    assert time.perf_counter() - start < 0.1


def test_size_problems_find_steps_and_record_specs_anywhere():
    assert size_problems({"steps": 2000, "record": "every:1"}) == []
    found = size_problems({"steps": 10 ** 9})
    assert found == [f"steps must be <= {MAX_STEPS:,} (validation.MAX_STEPS); got 1000000000"]
    found = size_problems({"steps": 1000, "record": "log:10000000000"})
    assert found and f"at most {MAX_RECORDED:,}" in found[0]
    nested = {"steps": 100, "runs": [{"steps": 5 * 10 ** 6}], "fashion": {"steps": 10 ** 6,
                                                                        "record": "every:1"}}
    found = size_problems(nested)
    assert len(found) == 2 and found[0].startswith("runs: steps must be")
    assert found[1].startswith("fashion: record='every:1' records up to")


REGISTRY = """\
pages:
  huge:
    template: orders
    title: A page
    claim: Something holds.
    common: {{}}
    profiles: {{smoke: {{{smoke}}}, cpu: {{}}, paper: {{}}}}
"""


@pytest.mark.parametrize("smoke, words", [
    ("steps: 1000000000", "steps must be <= 1,000,000"),
    ("steps: 1000, record: 'log:10000000000'", "record='log:10000000000' records up to"),
    ("steps: 100000000, record_forward: 'every:1'", "steps must be <= 1,000,000"),
])
def test_the_registry_check_refuses_absurd_sizes_before_building_anything(tmp_path, smoke,
                                                                         words):
    path = tmp_path / "experiments.yml"
    path.write_text(REGISTRY.format(smoke=smoke))
    start = time.perf_counter()
    problems = check_registry(path)
    assert time.perf_counter() - start < 5
    assert any(p.startswith("huge [smoke]: ") and words in p for p in problems), problems


def test_book_cost_refuses_absurd_sizes_before_building_anything(monkeypatch):
    def huge(name, profile):
        return {**real(name, profile), "steps": 10 ** 9}
    real = costs.resolved_parameters
    monkeypatch.setattr(costs, "resolved_parameters", huge)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="fig04-x2: steps must be <= 1,000,000"):
        costs.page_costs("cpu", "cpu", ["fig04-x2"])
    assert time.perf_counter() - start < 5


def _estimated_at(seconds):
    def announce(unique, pending, work, runtime, jobs):
        return {job: seconds for job in work}
    return announce


def test_a_run_estimated_over_the_limit_needs_consent(tmp_path, monkeypatch):
    monkeypatch.delenv(parallel.ALLOW_LONG_ENV, raising=False)
    monkeypatch.setattr(parallel, "_announce", _estimated_at(257 * 3600.0))
    with pytest.raises(LongRunError, match=r"estimated at .* above the 24 h a run may take "
                                           r"without consent.*--allow-long"):
        run_many([TINY], runtime(tmp_path))
    assert not list(tmp_path.glob("*.json"))  # nothing was computed
    assert not run_many([TINY], runtime(tmp_path), allow_long=True)[0]["from_cache"]
    monkeypatch.setenv(parallel.ALLOW_LONG_ENV, "1")
    run_many([TINY.replace(seed=1)], runtime(tmp_path))


def test_a_run_under_the_limit_needs_no_consent(tmp_path, monkeypatch):
    monkeypatch.delenv(parallel.ALLOW_LONG_ENV, raising=False)
    monkeypatch.setattr(parallel, "_announce", _estimated_at(60.0))
    assert not run_many([TINY], runtime(tmp_path))[0]["from_cache"]


def test_book_run_takes_the_consent_flag():
    with pytest.raises(SystemExit):  # parsed (then refused: no such page), not an unknown flag
        cli.main(["run", "--allow-long", "--only", "no-such-page"])


@pytest.mark.ray
def test_an_unreachable_ray_address_fails_fast_and_clearly(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at '127.0.0.1:1' "
                                              r"\(ray_address or \$RAY_ADDRESS\) within"):
        run_many([TINY], runtime(tmp_path), executor="ray", announce=False)
    assert time.perf_counter() - start < 60
    assert not list(tmp_path.glob("*.json"))
    with pytest.raises(ValueError, match="is not host:port or ray://host:port"):
        parallel._check_ray_address("nonsense")


# --- the size of a config, checked where it is built (issue 21: 10**9 steps took 9.6 GB) -------

@pytest.mark.parametrize("changes, message", [
    ({"steps": 10 ** 9}, r"steps must be an integer in 1\.\.1000000; got 1000000000"),
    ({"steps": 1000, "record": "log:10000000000"},
     r"record='log:10000000000' records up to 10,000,000,001 steps of 1,000; at most 100,000"),
    ({"steps": 1000, "record_forward": "every:1+log:10000000000"},
     r"record_forward='every:1\+log:10000000000' records up to"),
])
def test_a_config_too_large_to_build_is_refused_at_once(changes, message):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        TrajectoryConfig(**changes)
    assert time.perf_counter() - start < 1


def test_parse_record_refuses_a_spec_too_large_before_enumerating_it():
    from iteration_order.trajectory import parse_record
    start = time.perf_counter()
    with pytest.raises(ValueError, match="records up to 10,000,000,001 steps"):
        parse_record("log:10000000000", 1000)
    assert time.perf_counter() - start < 1


# --- a direct run_trajectory asks for consent too (run_many priced its runs; this did not) -------

def test_a_direct_run_estimated_over_the_limit_needs_consent(tmp_path, monkeypatch):
    import iteration_order.cost as cost
    import iteration_order.trajectory as trajectory
    from iteration_order import run_trajectory
    monkeypatch.delenv(cost.ALLOW_LONG_ENV, raising=False)
    monkeypatch.setattr(trajectory, "_CONSENT_CHECK_APPLICATIONS", 0)  # price even TINY
    monkeypatch.setattr(cost, "LONG_RUN_HOURS", 1e-9)  # and find it too long
    with pytest.raises(LongRunError, match=r"estimated at .* above the 3\.6e-06 h|estimated at"):
        run_trajectory(TINY, runtime(tmp_path))
    assert not list(tmp_path.glob("*.json"))  # refused before anything was computed
    assert not run_trajectory(TINY, runtime(tmp_path, allow_long=True))["from_cache"]
    monkeypatch.setenv(cost.ALLOW_LONG_ENV, "1")
    assert not run_trajectory(TINY.replace(seed=1), runtime(tmp_path))["from_cache"]


def test_a_cheap_direct_run_is_not_priced(tmp_path, monkeypatch):
    import iteration_order.cost as cost
    from iteration_order import run_trajectory

    def priced(*args, **kwargs):
        raise AssertionError("a run far below the consent threshold was priced")
    monkeypatch.setattr(cost, "estimate_costs", priced)
    assert not run_trajectory(TINY, runtime(tmp_path))["from_cache"]


def test_run_many_passes_its_consent_on_to_the_runs(tmp_path, monkeypatch):
    import iteration_order.cost as cost
    import iteration_order.trajectory as trajectory
    monkeypatch.delenv(cost.ALLOW_LONG_ENV, raising=False)
    monkeypatch.setattr(trajectory, "_CONSENT_CHECK_APPLICATIONS", 0)
    monkeypatch.setattr(cost, "LONG_RUN_HOURS", 1e-9)
    monkeypatch.setattr(parallel, "_announce", _estimated_at(1.0))
    # priced once by run_many and consented to there: the run itself does not ask again
    assert not run_many([TINY], runtime(tmp_path), allow_long=True)[0]["from_cache"]


def test_runtime_allow_long_is_checked():
    with pytest.raises(ValueError, match="allow_long must be True or False"):
        Runtime(allow_long="yes")
