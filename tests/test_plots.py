"""The learning-curve figures: orders compared at the same steps, background, tail, captions."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from iteration_order.book.plots import (DRAWN_SEEDS, describe_steps, figure_caption, plot_curves,  # noqa: E402
                                        shared_steps)

STEPS = 20


def fake_result(order, every, steps=STEPS, seed=0, classification=True, diverged_at=None,
                record=None, bad=float("nan")):
    """A result as `run_trajectory` stores it, recorded every ``every`` steps; a diverged one stops
    at ``diverged_at`` with ``bad`` (NaN or None) as its last loss."""
    recorded = list(range(0, steps + 1, every))
    if recorded[-1] != steps:
        recorded.append(steps)
    if diverged_at is not None:
        recorded = [n for n in recorded if n <= diverged_at]
    rng = np.random.default_rng(abs(hash((order, seed))) % 2**32)
    loss = [float(2.0 * math.exp(-n / 8) + 0.1 + 0.02 * rng.random()) for n in recorded]
    acc = [float(0.1 + 0.8 * (1 - math.exp(-n / 8))) for n in recorded]
    if diverged_at is not None:
        loss[-1] = bad
    spec = record or f"every:{every}"
    return {"config": {"order": order, "steps": steps, "seed": seed, "record": spec,
                       "record_forward": spec},
            "recorded_steps": recorded, "train_loss": loss, "test_loss": list(loss),
            "train_acc": acc if classification else [None] * len(recorded),
            "test_acc": list(acc) if classification else [None] * len(recorded),
            "displacement": [0.0] * len(recorded), "diverged_at": diverged_at}


def results_for(orders_every, seeds=(0, 1), **kwargs):
    return {(s, o): fake_result(o, every, seed=s, **kwargs) for s in seeds
            for o, every in orders_every.items()}


def by_gid(ax, prefix):
    return [a for a in ax.get_children() if (a.get_gid() or "").startswith(prefix)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_every_order_is_drawn_at_the_steps_all_orders_recorded():
    results = results_for({"forward": 1, "backward": 5})
    fig = plot_curves(results, [0, 1], ["forward", "backward"])
    expected = list(range(0, STEPS + 1, 5))
    assert shared_steps(results, 0, ["forward", "backward"]) == expected
    assert fig.axes[0].get_title().startswith("seed 0")
    for ax in fig.axes[:8]:  # 2 seeds × 4 curves
        mains = by_gid(ax, "main:")
        assert sorted(line.get_gid() for line in mains) == ["main:backward", "main:forward"]
        for line in mains:
            assert list(line.get_xdata()) == expected


def test_a_figure_draws_the_first_seeds_only_and_its_caption_says_so():
    seeds = list(range(DRAWN_SEEDS + 2))
    results = results_for({"forward": 1, "backward": 5}, seeds=seeds)
    fig = plot_curves(results, seeds, ["forward", "backward"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert {title.split(":")[0] for title in titles} == {f"seed {s}" for s in seeds[:DRAWN_SEEDS]}
    caption = figure_caption("Figure 4", results, ["forward", "backward"], "cpu", seeds=seeds)
    assert f"the first {DRAWN_SEEDS} of the {len(seeds)} seeds are drawn" in caption
    assert f"use all {len(seeds)}" in caption
    few = figure_caption("Figure 4", results, ["forward", "backward"], "cpu", seeds=seeds[:2])
    assert "are drawn" not in few


def test_forward_background_is_labelled_faint_and_underneath():
    results = results_for({"forward": 1, "backward": 5})
    fig = plot_curves(results, [0, 1], ["forward", "backward"])
    ax = fig.axes[0]
    [back] = by_gid(ax, "background:")
    assert back.get_gid() == "background:forward"
    assert list(back.get_xdata()) == list(range(STEPS + 1))
    assert "background" in back.get_label() and "every step" in back.get_label()
    mains = by_gid(ax, "main:")
    assert back.get_zorder() < min(line.get_zorder() for line in mains)
    assert back.get_alpha() < 0.5
    # the compared order is drawn above the reference
    main = {line.get_gid(): line for line in mains}
    assert main["main:backward"].get_zorder() > main["main:forward"].get_zorder()
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert back.get_label() in legend_texts
    # the main lines are labelled with the shared sampling, derived from the recorded steps
    assert "backward, every 5th step" in legend_texts and "forward, every 5th step" in legend_texts

    fig = plot_curves(results, [0, 1], ["forward", "backward"], background=False)
    assert not any(by_gid(a, "background:") for a in fig.axes)


def test_no_background_when_both_orders_recorded_the_same_steps():
    results = results_for({"forward": 5, "backward": 5})
    fig = plot_curves(results, [0, 1], ["forward", "backward"])
    assert not any(by_gid(a, "background:") for a in fig.axes)


@pytest.mark.parametrize("tail, start", [(0.25, 15.0), (0.5, 10.0)])
def test_tail_window_is_shaded_where_the_statistics_look(tail, start):
    results = results_for({"forward": 1, "backward": 5})
    fig = plot_curves(results, [0, 1], ["forward", "backward"], tail=tail)
    for ax in fig.axes:
        [span] = by_gid(ax, "tail")
        x = np.asarray(span.get_xy() if not isinstance(span, Rectangle) else
                       [(span.get_x(), 0), (span.get_x() + span.get_width(), 0)])[:, 0]
        assert x.min() == pytest.approx(start) and x.max() == pytest.approx(STEPS)
        assert span.get_zorder() < min(line.get_zorder() for line in by_gid(ax, "main:"))


def test_reset_and_switch_steps_are_marked():
    for order in ("reset:at=10", "switch:10"):
        results = results_for({"forward": 1, order: 5})
        fig = plot_curves(results, [0, 1], ["forward", order])
        for ax in fig.axes:
            [mark] = by_gid(ax, "mark:")
            assert list(mark.get_xdata()) == [10, 10]


@pytest.mark.parametrize("bad", [float("nan"), None, float("inf")])
def test_a_diverged_run_is_drawn_up_to_where_it_stopped_and_marked(bad):
    results = {(0, "forward"): fake_result("forward", 1),
               (0, "backward"): fake_result("backward", 5, diverged_at=10, bad=bad)}
    fig = plot_curves(results, [0], ["forward", "backward"])
    ax = fig.axes[0]  # train loss
    # the other order is not cut where this one stopped: its schedule counts after that
    main = {line.get_gid(): line for line in by_gid(ax, "main:")}
    assert list(main["main:forward"].get_xdata()) == list(range(0, STEPS + 1, 5))
    backward_y = np.asarray(main["main:backward"].get_ydata(), dtype=float)
    assert np.isnan(backward_y[2:]).all() and np.isfinite(backward_y[:2]).all()
    marks = by_gid(ax, "diverged:backward")
    cross = [m for m in marks if m.get_marker() == "X"]
    assert [float(x) for x in cross[0].get_xdata()] == [5.0]  # the last finite value
    assert any(list(m.get_xdata()) == [10, 10] for m in marks)  # where it diverged
    fig.canvas.draw()  # and it renders
    caption = figure_caption("Figure 4", results, ["forward", "backward"], "cpu")
    assert "backward on seed 0 at step 10" in caption
    assert "(0 shared steps per seed)" in caption  # the statistics have nothing after it


def test_regression_shows_losses_only():
    results = results_for({"forward": 1, "backward": 5}, classification=False)
    fig = plot_curves(results, [0, 1], ["forward", "backward"])
    assert len(fig.axes) == 4
    assert fig.axes[1].get_title() == "seed 0: test loss"
    assert fig.axes[0].get_yscale() == "log"


def test_readable_at_page_width_and_legend_clear_of_the_panels():
    results = results_for({"forward": 1, "backward": 5}, seeds=(0, 1, 2, 3, 4))
    fig = plot_curves(results, [0, 1, 2, 3, 4], ["forward", "backward"])
    assert fig.get_figwidth() <= 9  # at 100 dpi: no wider than the book's text column
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]
    assert texts and min(t.get_fontsize() for t in texts) >= 8
    legend = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not legend.overlaps(ax.get_tightbbox(renderer))
    assert len(fig.legends[0].get_texts()) == len({t.get_text() for t in
                                                   fig.legends[0].get_texts()})


def test_caption_names_the_figure_the_sampling_from_the_data_and_the_profile():
    results = results_for({"forward": 2, "backward": 5})
    caption = figure_caption("Figure 7", results, ["forward", "backward"], "cpu")
    assert caption.startswith("The paper's Figure 7, rerun at the cpu profile")
    assert "every 10th step" in caption  # shared by every 2nd and every 5th
    assert "every 2nd step" in caption and "background" in caption
    assert "last 25% of training (steps 15–20)" in caption
    assert "seeds 0 and 1" in caption

    # the sampling comes from the recorded steps, not from the record spec in the config
    misleading = results_for({"forward": 1, "backward": 4}, record="every:7")
    caption = figure_caption("Figures 3 and 13", misleading, ["forward", "backward"], "paper",
                             tail=0.5)
    assert "every 4th step" in caption and "every 7th" not in caption
    assert "paper profile" in caption and "last 50%" in caption
    assert "Figures 3 and 13" in caption
    extension = figure_caption(None, results, ["forward", "backward"], "cpu")
    assert extension.startswith("Not a figure of the paper, rerun at the cpu profile")

    switched = results_for({"forward": 1, "switch:10": 5})
    caption = figure_caption("Figure 10", switched, ["forward", "switch:10"], "cpu")
    assert "switch to backward at step 10" in caption
    assert "Up to step 10 the switched run is forward SGD" in caption


@pytest.mark.parametrize("steps, text", [
    (range(0, 21), "every step"),
    (range(0, 2001, 20), "every 20th step"),
    (range(0, 101, 2), "every 2nd step"),
    ([0, 3, 6, 9, 10], "every 3rd step and the last"),
    (range(0, 221, 21), "every 21st step"),
    (range(0, 121, 12), "every 12th step"),
    ([0, 1, 2, 4, 8, 16, 64], "at 7 steps (0, 1, 2, …, 64)"),
])
def test_describe_steps(steps, text):
    assert describe_steps(list(steps)) == text
