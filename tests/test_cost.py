"""The cost model: exact plans of the batched engine, warm-ups at the run's own group width,
stand-in data for missing sets, and the book's ``cost`` command."""
import pytest
import torch

from iteration_order import Runtime, TrajectoryConfig, planned_applications
from iteration_order import cost
from iteration_order.book import cli, runner
from iteration_order.book.costs import page_costs, render_costs
from iteration_order.cost import estimate_costs, group_widths
from iteration_order.data import DataNotFoundError

SMALL = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, steps=30, order="backward",
                         record="every:5")


def test_group_widths_of_a_known_plan():
    # backward over 6 steps in groups of 3: {1, 2, 3} from θ_0, then {4, 5, 6} from θ_0
    widths, alone = group_widths("backward", 6, None, 3)
    assert dict(widths) == {1: 1 + 1, 2: 1 + 1, 3: 1 + 4} and alone == 0
    # forward up to 3 (each step alone), then backward from θ_3 as one group {4, 5, 6}
    widths, alone = group_widths("switch:3", 6, None, 3)
    assert dict(widths) == {1: 1, 2: 1, 3: 1} and alone == 3


@pytest.mark.parametrize("order", ["backward", "reset:every=7", "reset:at=10,20", "switch:12"])
@pytest.mark.parametrize("at, group_size", [(None, 4), (list(range(3, 31, 3)), 8), ([30], 2)])
def test_group_steps_account_for_every_application(order, at, group_size):
    widths, alone = group_widths(order, 30, at, group_size)
    assert sum(w * count for w, count in widths.items()) + alone == \
        planned_applications(order, 30, at)
    assert max(widths, default=0) <= group_size


def test_batched_estimate_prices_each_width_and_times_the_runs_own_width(tmp_path, monkeypatch):
    timed_widths = []

    def group_step(run, width):  # a price per group step: 1 ms + 0.1 ms per trajectory
        timed_widths.append(width)
        return 1e-3 + 1e-4 * width

    monkeypatch.setattr(cost, "_group_step_seconds", group_step)
    monkeypatch.setattr(cost, "_sequential_seconds", lambda run: 5e-3)
    monkeypatch.setattr(cost, "_evaluation_seconds", lambda run, examples: 0.0)
    runtime = Runtime(device="cpu", engine="batched", group_size=32, results_dir=tmp_path,
                      progress=False)
    config = SMALL.replace(steps=100, record="every:1")
    (estimate,) = estimate_costs([config], runtime)
    assert (estimate.engine, estimate.group_size) == ("batched", 32)
    assert max(timed_widths) == 32 and sorted(timed_widths) == [1, 8, 16, 32]
    widths, alone = group_widths("backward", 100, None, 32)
    assert alone == 0
    expected = sum(n * (1e-3 + 1e-4 * w) for w, n in widths.items())  # linear: exact interpolation
    assert estimate.map_seconds == pytest.approx(expected, rel=1e-12)
    # the per-application average falls as groups widen: the fixed 1 ms is shared
    assert estimate.seconds_per_application < 1e-3 + 1e-4


def test_sequential_estimate_is_applications_times_one_application(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "_sequential_seconds", lambda run: 2e-3)
    monkeypatch.setattr(cost, "_evaluation_seconds", lambda run, examples: 0.5)
    runtime = Runtime(device="cpu", results_dir=tmp_path, progress=False)
    estimates = estimate_costs([SMALL, SMALL.replace(order="forward")], runtime)
    assert [e.engine for e in estimates] == ["sequential", "sequential"]
    backward, forward = estimates
    assert backward.applications == sum(range(5, 31, 5))
    assert backward.seconds == pytest.approx(backward.applications * 2e-3 + 7 * 0.5)
    assert forward.seconds == pytest.approx(30 * 2e-3 + 31 * 0.5)


def test_real_warm_up_gives_positive_prices(tmp_path):
    runtime = Runtime(device="cpu", engine="batched", group_size=4, threads=1,
                      results_dir=tmp_path, progress=False)
    (estimate,) = estimate_costs([SMALL.replace(steps=12, record="every:1")], runtime)
    assert estimate.map_seconds > 0 and estimate.seconds_per_evaluation > 0


def test_missing_data_is_timed_on_a_stand_in_at_the_official_sizes(tmp_path, monkeypatch):
    examples = []
    monkeypatch.setattr(cost, "_sequential_seconds", lambda run: 1e-3)
    monkeypatch.setattr(cost, "_evaluation_seconds",
                        lambda run, n: examples.append(n) or 1e-3)
    config = TrajectoryConfig(dataset="cifar10", model="vgg19", batch_size=2, steps=2,
                              order="backward", eval_train_size=5000)
    runtime = Runtime(device="cpu", data_root=str(tmp_path), results_dir=tmp_path,
                      progress=False)
    with pytest.raises(DataNotFoundError):
        estimate_costs([config], runtime)
    (estimate,) = estimate_costs([config], runtime, stand_in=True)
    assert estimate.stand_in and examples == [5000 + 10000]  # subset of train, whole test set


def test_cost_command_prints_pages_and_a_total(capsys):
    cli.main(["cost", "--profile", "smoke", "--device", "cpu", "--only", "fig04-x2",
                 "theory"])
    out = capsys.readouterr().out
    assert "| fig04-x2 | 4 | 540 | 136 | sequential |" in out
    assert "| **all pages** (shared runs once) | 4 | 540 | 136 |" in out
    assert "Not covered (other templates, their own studies): theory." in out


def test_shared_runs_count_once_in_the_total(monkeypatch):
    monkeypatch.setattr(cost, "_sequential_seconds", lambda run: 1e-3)
    monkeypatch.setattr(cost, "_evaluation_seconds", lambda run, n: 1e-3)
    costs, _ = page_costs("smoke", "cpu", ["fig03-reset", "fig10-switch"])
    table = render_costs(costs, [], "smoke", "cpu", jobs=2)
    # both pages run forward seed 0: 3 (forward, reset, backward) + 2 runs, 4 distinct
    assert "| **all pages** (shared runs once) | 4 |" in table
    assert "With 2 parallel jobs" in table


def test_cost_command_refuses_cuda_without_cuda_and_unknown_pages(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    # each refusal is one paragraph (SystemExit's message, printed to stderr), no usage banner
    for args, message in (
            (["--profile", "paper", "--device", "cuda"],
             "device 'cuda' requested but CUDA is not available"),
            (["--profile", "smoke", "--device", "cpu", "--only", "fig99"],
             "unknown page(s) ['fig99']"),
            (["--profile", "huge", "--device", "cpu"], "unknown profile 'huge'")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["cost", *args])
        assert message in str(exit_.value.code) and "usage:" not in capsys.readouterr().err
