"""Figures as in the paper: one row per seed, one column per learning curve, orders overlaid.

`plot_curves` compares orders at the same steps: in each row (seed) every order is drawn, as a
solid line, through the steps that *all* compared orders recorded, so a densely recorded forward
curve is never set against a sparsely recorded backward one (sparse sampling alone smooths a
curve). An order recorded more densely than that (forward, usually) is drawn again through all
its steps as a faint background line. The window of the stability statistics (the last ``tail``
fraction of training) is shaded, reset and switch steps are dashed, and a run that diverged is
marked where it stopped. `figure_caption` writes the matching caption from the same data.

Every artist `plot_curves` draws carries a ``gid`` naming its role (``main:<order>``,
``background:<order>``, ``tail``, ``mark:<order>``, ``diverged:<order>``), which the tests use.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter

from ..orders import Reset, SwitchAt, as_order

__all__ = ["plot_curves", "figure_caption", "shared_steps", "describe_steps", "order_label",
           "ORDER_COLOURS", "order_diagram", "plot_claims"]

# Seaborn's colour-blind palette (Okabe-Ito colours). Forward is always blue and every compared
# order a colour far from it: under simulated deuteranopia and protanopia (Machado et al. 2009)
# the CIELAB distance to forward's blue is 104-117 for backward's orange, 91-108 for the switch's
# vermilion and 55-58 for the reset's green (the palette's best third colour: also 47-62 from
# orange, which the Appendix C page draws next to it).
_PALETTE = sns.color_palette("colorblind")
ORDER_COLOURS = {"forward": _PALETTE[0], "backward": _PALETTE[1], "reset": _PALETTE[2],
                 "switch": _PALETTE[3]}
_METRICS = [("train_loss", "train loss"), ("test_loss", "test loss"),
            ("train_acc", "train accuracy"), ("test_acc", "test accuracy")]
_FONT = 8            # points, at the figure's own size: the figure is sized for the page width
_WIDTH = {1: 4.0, 2: 6.0, 3: 7.2, 4: 8.0}  # inches (100 dpi: 400-800 px, the book's text width)
_ROW_HEIGHT = 1.55   # inches per seed
# rows a curve figure draws: past a handful of seeds a figure only grows (20 seeds made a 7,950 px
# tall image of 3.6 MB); the statistics and tables use every seed, and the caption says so
DRAWN_SEEDS = 5
_MARKERS_UP_TO = 40  # shared steps per row up to which the main lines show their points
_TAIL_COLOUR = "0.92"


def order_label(order: str) -> str:
    o = as_order(order)
    if isinstance(o, Reset):
        return f"backward, base reset at {', '.join(map(str, o.at))}" if o.at else \
            f"backward, base reset every {o.every} steps"
    if isinstance(o, SwitchAt):
        return f"forward, then backward from step {o.step}"
    return o.spec()


def _colour(order: str):
    return ORDER_COLOURS[order.split(":")[0]]


def _marks(order: str) -> list[int]:
    o = as_order(order)
    if isinstance(o, Reset):
        return list(o.at)
    if isinstance(o, SwitchAt):
        return [o.step]
    return []


def _mark_label(order: str) -> str:
    o = as_order(order)
    return "switch to backward" if isinstance(o, SwitchAt) else "base point reset"


def _ordinal(k: int) -> str:
    if k == 1:
        return "every step"
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix} step"


def describe_steps(steps) -> str:
    """How a sorted list of steps is spaced, in words: "every 20th step", "every step",
    "every 3rd step and the last", or "at 7 steps (0, 1, 2, …, 64)" when irregular."""
    steps = sorted(int(n) for n in steps)
    if len(steps) < 2:
        return f"at step {steps[0]} only" if steps else "at no step"
    gaps = np.diff(steps)
    if len(set(gaps.tolist())) == 1:
        return _ordinal(int(gaps[0]))
    if len(steps) > 2 and len(set(gaps[:-1].tolist())) == 1 and gaps[-1] < gaps[0]:
        return f"{_ordinal(int(gaps[0]))} and the last"
    shown = ", ".join(map(str, steps[:3])) + (f", …, {steps[-1]}" if len(steps) > 3 else "")
    return f"at {len(steps)} steps ({shown})"


def _planned_steps(result: dict) -> list[int] | None:
    """The steps a run's record spec asks for (step 0 included), or None if its config lacks it."""
    from ..orders import Forward
    from ..trajectory import parse_record

    config = result.get("config", {})
    try:
        forward = as_order(config["order"]) == Forward()
        spec = config["record_forward"] if forward else config["record"]
        return [0] + parse_record(spec, int(config["steps"]))
    except (KeyError, TypeError, ValueError):
        return None


def _grid(result: dict) -> list[int]:
    """The steps a result stands for: those it recorded, and, for a run that diverged, the steps
    its schedule would have recorded after it stopped (so the other orders are not cut there)."""
    steps = [int(n) for n in result["recorded_steps"]]
    if result.get("diverged_at") is not None and steps:
        planned = _planned_steps(result)
        if planned:
            steps += [n for n in planned if n > steps[-1]]
    return steps


def shared_steps(results: dict, seed, orders) -> list[int]:
    """The steps every order of ``orders`` recorded for ``seed`` (the x data of the main lines);
    a diverged order counts, after its last step, with the steps its schedule planned."""
    common = set(_grid(results[(seed, orders[0])]))
    for order in orders[1:]:
        common &= set(_grid(results[(seed, order)]))
    return sorted(common)


def _recorded_by_all(results: dict, seed, orders) -> list[int]:
    common = set(results[(seed, orders[0])]["recorded_steps"])
    for order in orders[1:]:
        common &= set(results[(seed, order)]["recorded_steps"])
    return sorted(common)


def _values(result: dict, key: str, steps) -> np.ndarray:
    """The curve at ``steps`` as floats: NaN where not recorded, missing (None) or not finite."""
    where = {int(n): i for i, n in enumerate(result["recorded_steps"])}
    values = result[key]
    out = np.full(len(steps), np.nan)
    for j, n in enumerate(steps):
        i = where.get(int(n))
        if i is not None and i < len(values) and values[i] is not None:
            out[j] = float(values[i])
    out[~np.isfinite(out)] = np.nan
    return out


def _has_curve(results: dict, key: str) -> bool:
    return any(any(v is not None for v in r.get(key) or []) for r in results.values())


def _total_steps(results: dict, seeds, orders) -> int:
    totals = [results[(s, o)].get("config", {}).get("steps") for s in seeds for o in orders]
    totals = [int(t) for t in totals if t is not None]
    return max(totals) if totals else max(max(r["recorded_steps"]) for r in results.values())


def _tail_start(total: int, tail: float) -> float:
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1]; got {tail!r}")
    return total * (1 - tail)


def _plain_log_ticks(ax) -> None:
    """Log-axis labels as plain numbers (0.5, 1, 2) over short ranges, not 5×10⁻¹; powers of ten
    over more than two decades."""
    low, high = ax.get_ylim()
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high <= low:
        return
    decades = math.log10(high / low)
    if decades > 2:
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = []
    for subs in ((1, 2, 5), (1, 2, 3, 5), (1, 2, 3, 4, 6, 8), tuple(range(1, 10))):
        ticks = [t for t in (m * 10.0 ** e for e in range(lo, hi + 1) for m in subs)
                 if low <= t <= high]
        if len(ticks) >= 4:
            break
    if len(ticks) < 3:  # under half a decade: evenly spaced plain numbers
        ticks = [t for t in MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
                 if low <= t <= high and t > 0]
    if len(ticks) < 2:
        return
    digits = next((d for d in range(3, 9) if len({f"{t:.{d}g}" for t in ticks}) == len(ticks)), 9)
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.{digits}g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(low, high)


def plot_curves(results: dict, seeds, orders, log_loss: bool = True, tail: float = 0.25,
                background: bool = True):
    """A grid of seeds × curves (classification shows accuracies too), returned as a figure.

    In each row every order is drawn through the steps all ``orders`` recorded for that seed
    (`shared_steps`), the first order (the reference, forward) underneath and the others on top.
    With ``background``, an order that recorded more steps than those is drawn again, faintly and
    underneath, through all of them. The last ``tail`` fraction of training (the stability
    statistics' window) is shaded; reset and switch steps are dashed; a diverged run ends in a
    cross at its last finite value, with a dotted line at the step where it diverged.
    """
    seeds, orders = list(seeds)[:DRAWN_SEEDS], list(orders)
    metrics = [m for m in _METRICS if _has_curve(results, m[0])]
    total = _total_steps(results, seeds, orders)
    start = _tail_start(total, tail)
    rc = {"font.size": _FONT, "axes.titlesize": _FONT + 0.5, "axes.labelsize": _FONT,
          "xtick.labelsize": _FONT, "ytick.labelsize": _FONT, "legend.fontsize": _FONT}
    with plt.rc_context(rc):
        fig, axes = plt.subplots(len(seeds), len(metrics), squeeze=False, sharex=True,
                                 figsize=(_WIDTH.get(len(metrics), 2.0 * len(metrics)),
                                          _ROW_HEIGHT * len(seeds) + 0.7), layout="constrained")
        for row, seed in enumerate(seeds):
            shared = shared_steps(results, seed, orders)
            for col, (key, title) in enumerate(metrics):
                ax = axes[row][col]
                ax.axvspan(start, total, color=_TAIL_COLOUR, lw=0, zorder=0, gid="tail",
                           label=f"last {tail:.0%} of training (window of the statistics)")
                _draw_orders(ax, results, seed, orders, key, shared, background)
                if log_loss and key.endswith("loss"):
                    ax.set_yscale("log")
                    _plain_log_ticks(ax)
                ax.set_title(f"seed {seed}: {title}", pad=3)
                ax.set_xlim(0, total)
                if row == len(seeds) - 1:
                    ax.set_xlabel("step")
        _curves_legend(fig, axes)  # inside the rc context: the legend takes its font size
    return fig


def _draw_orders(ax, results: dict, seed, orders: list, key: str, shared: list[int],
                 background: bool) -> None:
    """One panel's lines: every order through the ``shared`` steps, the reference wider and
    underneath; with ``background``, an order's further recorded steps as a faint line; its
    reset or switch steps; and where a run diverged."""
    spacing = describe_steps(shared)
    marker = "o" if len(shared) <= _MARKERS_UP_TO else None
    for rank, order in enumerate(orders):
        r, colour = results[(seed, order)], _colour(order)
        if background and len(set(r["recorded_steps"]) - set(shared)) > 0:
            steps = [int(n) for n in r["recorded_steps"]]
            ax.plot(steps, _values(r, key, steps), color=colour, lw=0.5, alpha=0.3,
                    zorder=1, gid=f"background:{order}",
                    label=f"{order_label(order)}, {describe_steps(steps)} "
                          f"(background)")
        # the reference wider and underneath: where lines coincide both show
        ax.plot(shared, _values(r, key, shared), color=colour,
                lw=1.5 if rank == 0 else 0.9, zorder=2 + rank, marker=marker, ms=2,
                gid=f"main:{order}", label=f"{order_label(order)}, {spacing}")
        for step in _marks(order):
            ax.axvline(step, color="0.3", ls="--", lw=0.8, zorder=1.5,
                       gid=f"mark:{order}", label=_mark_label(order))
        _mark_divergence(ax, r, key, order, colour, zorder=2 + len(orders))


def _curves_legend(fig, axes) -> None:
    """One legend above the grid: each label once (panels repeat them), main lines first, then
    background lines, divergences, reset or switch marks and the tail window."""
    handles, labels = {}, []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    order_of = {"main": 0, "background": 1, "diverged": 2, "mark": 3, "tail": 4}
    labels.sort(key=lambda lab: order_of.get((handles[lab].get_gid() or "").split(":")[0], 5))
    fig.legend([handles[lab] for lab in labels], labels, loc="outside upper center",
               ncol=2 if len(labels) > 2 else len(labels), frameon=False,
               handlelength=1.8, columnspacing=1.5)


def _mark_divergence(ax, result: dict, key: str, order: str, colour, zorder: float) -> None:
    """A cross at the last finite value before a run diverged, a dotted line where it did."""
    step = result.get("diverged_at")
    if step is None:
        return
    steps = [int(n) for n in result["recorded_steps"]]
    values = _values(result, key, steps)
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite):
        last = finite[-1]
        ax.plot([steps[last]], [values[last]], "X", color=colour, ms=6, mec="black", mew=0.5,
                zorder=zorder, gid=f"diverged:{order}", label=f"{order_label(order)} diverged")
    ax.axvline(step, color=colour, ls=":", lw=1.0, zorder=zorder - 0.5, gid=f"diverged:{order}")


def figure_caption(paper_figure: str | None, results: dict, orders, profile: str,
                   tail: float = 0.25, seeds=None) -> str:
    """One paragraph under a `plot_curves` figure: the paper's figure (``"Figure 7"``; empty or
    None for a figure the paper does not have), the steps drawn, derived from the recorded steps,
    the shaded tail window and the profile. ``tail`` must be the one `plot_curves` was given."""
    orders = list(orders)
    seeds = list(seeds) if seeds is not None else sorted({s for s, _ in results})
    total = _total_steps(results, seeds, orders)
    start = _tail_start(total, tail)
    names = [f"{order_label(o)} ({_colour_name(o)})" for o in orders]
    listed = " and ".join(names) if len(names) <= 2 else \
        ", ".join(names[:-1]) + f" and {names[-1]}"
    shared = {seed: shared_steps(results, seed, orders) for seed in seeds}
    spacing = sorted({describe_steps(steps) for steps in shared.values()})
    # the statistics use the steps all orders did record (not those a diverged run planned)
    in_tail = sorted({sum(1 for n in _recorded_by_all(results, seed, orders)
                          if n >= start and n > 0) for seed in seeds})
    everyone = "both orders" if len(orders) == 2 else f"all {len(orders)} orders"
    drawn = seeds[:DRAWN_SEEDS]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"seeds {', '.join(map(str, drawn[:-1]))} and {drawn[-1]}, one row each"
    if len(drawn) < len(seeds):
        seed_text += (f"; the first {len(drawn)} of the {len(seeds)} seeds are drawn, and the "
                      f"statistics and tables use all {len(seeds)}")
    what = f"The paper's {paper_figure}" if paper_figure else "Not a figure of the paper"
    parts = [f"{what}, rerun at the {profile} profile ({seed_text}).",
             f"Solid lines: {listed}, each through {' or '.join(spacing)}, the steps {everyone} "
             f"recorded, so that no curve looks smoother only for being sampled more sparsely; "
             f"{order_label(orders[0])} is drawn wider and underneath, so that where the lines "
             f"coincide both stay visible."]
    backgrounds = []
    for order in orders:
        spaced = sorted({describe_steps(results[(s, order)]["recorded_steps"]) for s in seeds
                         if set(results[(s, order)]["recorded_steps"]) - set(shared[s])})
        if spaced:
            backgrounds.append(f"{order_label(order)} through {' or '.join(spaced)}")
    if backgrounds:
        parts.append(f"Faint lines: {'; '.join(backgrounds)}, as recorded (background).")
    count = " or ".join(map(str, in_tail))
    parts.append(f"Shaded: the last {tail:.0%} of training (steps {start:g}–{total}), the window "
                 f"of the stability statistics below ({count} shared step"
                 f"{'' if in_tail == [1] else 's'} per seed).")
    marks = sorted({(step, _mark_label(o)) for o in orders for step in _marks(o)})
    if marks:
        parts.append("Dashed: " + "; ".join(f"{what} at step {step}" for step, what in marks) + ".")
    for order in orders[1:]:
        o = as_order(order)
        if isinstance(o, SwitchAt) and as_order(orders[0]).spec() == "forward":
            parts.append(f"Up to step {o.step} the switched run is forward SGD, so its line "
                         f"coincides with forward's there.")
    diverged = [f"{order_label(o)} on seed {s} at step {results[(s, o)]['diverged_at']}"
                for s in seeds for o in orders if results[(s, o)].get("diverged_at") is not None]
    if diverged:
        parts.append("Diverged (cross at the last finite value, dotted line at the step): "
                     + "; ".join(diverged) + ".")
    if any(_has_curve(results, k) for k in ("train_acc", "test_acc")):
        parts.append("Losses on a log scale, accuracies on a linear one.")
    else:
        parts.append("Losses on a log scale.")
    return " ".join(parts)


_COLOUR_NAMES = {"forward": "blue", "backward": "orange", "reset": "green", "switch": "vermilion"}


def _colour_name(order: str) -> str:
    return _COLOUR_NAMES[order.split(":")[0]]


def order_diagram(steps: int = 4):
    """Our figure for forward against backward iteration: which maps produce θ_n, and what is new.

    Each row is one step n; boxes are map applications in the order they happen, labelled by the
    batch they use. Forward keeps its state, so only T_n is new work; backward restarts from θ_0
    and applies T_n, ..., T_1 again, so step n costs n applications.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.9 + 0.55 * steps), sharey=True)
    for ax, order in zip(axes, ("forward", "backward")):
        for n in range(1, steps + 1):
            y = steps - n
            batches = list(range(1, n + 1)) if order == "forward" else list(range(n, 0, -1))
            ax.text(-0.35, y, r"$\theta_0$", ha="right", va="center", fontsize=10)
            for x, b in enumerate(batches):
                new = order == "backward" or b == n
                face = ORDER_COLOURS[order] if new else "white"
                ax.add_patch(plt.Rectangle((x, y - 0.3), 0.85, 0.6, facecolor=face,
                                           edgecolor="grey" if not new else face, alpha=0.9))
                ax.text(x + 0.425, y, f"$T_{b}$", ha="center", va="center", fontsize=9,
                        color="black" if not new else "white")
            ax.text(len(batches) + 0.1, y, rf"$\to \theta_{n}$" + ("" if order == "forward"
                    else r"$^B$"), va="center", fontsize=10)
            ax.text(steps + 1.3, y, f"{n if order == 'backward' else 1} new", va="center",
                    fontsize=8, color="grey")
        ax.set_xlim(-1.2, steps + 2.4)
        ax.set_ylim(-0.7, steps - 0.3)
        ax.axis("off")
        ax.set_title(f"{order}: " + ("keep the state, apply the new map"
                                     if order == "forward" else
                                     "restart from $\\theta_0$, newest map first"), fontsize=10)
    fig.text(0.5, 0.01, "boxes: map applications left to right; white boxes were computed at "
             "an earlier step and are not repeated", ha="center", fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _ratio_ticks(low: float, high: float, most: int = 4) -> list[float]:
    """At most ``most`` plain ticks (0.1, 0.2, 0.5, 1, 2, ...) inside [low, high] on a log axis,
    thinned to 1-2-5, then to 1-3, then to powers of ten, then to every other power of ten, until
    they fit a narrow panel."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = []
    for mantissas, step in (((1, 2, 5), 1), ((1, 3), 1), ((1,), 1), ((1,), 2), ((1,), 3)):
        ticks = [m * 10.0 ** e for e in decades if e % step == 0 for m in mantissas
                 if low <= m * 10.0 ** e <= high]
        if len(ticks) <= most:
            break
    return ticks


_CLAIM_FONT = 9      # points; the figure is 7.5 in wide, the book's text width at 100 dpi


def plot_claims(claims, ratios_by_page: dict, shown: list[str], level: float = 0.95):
    """A forest plot of the claims: one panel per claim in ``shown``, one row per (page, compared
    order), the per-seed ratios other/forward as dots and, where the row has at least
    `summary.MIN_INTERVAL_SEEDS` seeds with a ratio, their geometric mean (diamond) with its
    ``level`` t-interval on the log ratios (bar); with fewer seeds the mean is drawn without a
    bar. A row whose claim cannot be tested (no seed has the ratio: too few shared tail steps, or
    diverged runs) shows 'cannot test' and no ratio; one whose page does not measure the quantity
    (accuracy on a regression) shows 'not measured'. Log scale, no-effect line at 1 (left of it:
    the other order does better on that seed). Sized for the page: 7.5 in wide, all text at
    `_CLAIM_FONT` points, so it stays readable at the book's text width.

    ``claims``: `summary.claims_table`; ``ratios_by_page``: page -> `summary.claim_ratios` of its
    stability table."""
    unknown = [c for c in shown if c not in set(claims.index.get_level_values("claim"))]
    if unknown:
        raise ValueError(f"claims not in the table: {unknown}; allowed: "
                         f"{list(dict.fromkeys(claims.index.get_level_values('claim')))}")
    rows = [(name, order) for name, per_seed in ratios_by_page.items()
            for order in per_seed.index.get_level_values("order").unique()]
    several = {name for name, _ in rows if sum(n == name for n, _ in rows) > 1}
    labels = [f"{name} ({order.split(':')[0]})" if name in several else name
              for name, order in rows]
    rc = {"font.size": _CLAIM_FONT, "axes.titlesize": _CLAIM_FONT,
          "xtick.labelsize": _CLAIM_FONT, "ytick.labelsize": _CLAIM_FONT}
    with plt.rc_context(rc):
        fig, axes = plt.subplots(1, len(shown), sharey=True, squeeze=False,
                                 figsize=(7.5, 1.3 + 0.27 * len(rows)), layout="constrained")
        for ax, claim in zip(axes[0], shown):
            drawn = [1.0]  # the no-effect line is always in view
            for y, (name, order) in enumerate(rows):
                drawn += _draw_claim_row(ax, claims, ratios_by_page[name], (name, order, claim),
                                         y)
            _claim_axis(ax, claim, drawn)
        axes[0][0].set_yticks(range(len(rows)), labels)
        axes[0][0].set_ylim(len(rows) - 0.5, -0.6)
    return fig


def _draw_claim_row(ax, claims, per_seed, key: tuple, y: int) -> list[float]:
    """One row of a claim's panel at height ``y``: the per-seed ratios (``per_seed``: the page's
    `summary.claim_ratios`), the geometric mean and its interval where there is one, or why
    there is no ratio. Returns the values drawn, which the axis limits must show."""
    _, order, claim = key
    row = claims.loc[key] if key in claims.index else None
    if row is None or row["n"] == 0:  # no ratio: say why instead of drawing one
        ax.text(0.5, y, "not measured" if row is None else "cannot test",
                transform=ax.get_yaxis_transform(), ha="center", va="center",
                color="0.3", gid="not-measured" if row is None else "cannot-test",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
        return []
    values = per_seed.xs(order, level="order")[claim].to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    drawn = list(values) + [v for v in (row["low"], row["high"], row["ratio"])
                            if np.isfinite(v) and v > 0]
    ax.scatter(values, np.full(len(values), y) + np.linspace(-0.12, 0.12, len(values)),
               s=14, color=ORDER_COLOURS["backward"], alpha=0.85, zorder=3,
               linewidths=0, gid="seed")
    if np.isfinite(row["low"]):
        ax.errorbar(row["ratio"], y + 0.3, fmt="none", ecolor="black", capsize=2,
                    lw=0.9, xerr=[[row["ratio"] - row["low"]],
                                  [row["high"] - row["ratio"]]], gid="interval")
    if np.isfinite(row["ratio"]):
        ax.scatter([row["ratio"]], [y + 0.3], marker="D", s=16, color="black",
                   zorder=4, gid="mean")
    return drawn


def _claim_axis(ax, claim: str, drawn: list[float]) -> None:
    """A claim panel's axis: the no-effect line at 1, a log scale just wider than every value
    ``drawn``, with a few plain ticks a narrow panel can hold, and the claim as its title."""
    import textwrap

    ax.axvline(1, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log")
    low, high = min(drawn) / 1.6, max(drawn) * 1.6
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(FixedLocator(_ratio_ticks(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(textwrap.fill(claim, 20), loc="left")
    ax.set_xlabel("other / forward")
    ax.grid(axis="y", color="0.92", lw=0.6)
