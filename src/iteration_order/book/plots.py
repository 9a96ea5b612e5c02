"""Figures as in the paper: one row per seed, one column per learning curve, orders overlaid."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from ..orders import Reset, SwitchAt, as_order

__all__ = ["plot_curves", "order_label", "ORDER_COLOURS", "order_diagram"]

_PALETTE = sns.color_palette("colorblind")
ORDER_COLOURS = {"forward": _PALETTE[0], "backward": _PALETTE[1], "reset": _PALETTE[2],
                 "switch": _PALETTE[3]}
_METRICS = [("train_loss", "train loss"), ("test_loss", "test loss"),
            ("train_acc", "train accuracy"), ("test_acc", "test accuracy")]


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


def plot_curves(results: dict, seeds, orders, log_loss: bool = True):
    """A grid of seeds × curves; classification shows accuracies too. Returns the figure."""
    first = results[(seeds[0], orders[0])]
    metrics = [m for m in _METRICS if first[m[0]][0] is not None]
    fig, axes = plt.subplots(len(seeds), len(metrics), figsize=(3.4 * len(metrics),
                             2.5 * len(seeds)), squeeze=False, sharex=True)
    for row, seed in enumerate(seeds):
        for col, (key, title) in enumerate(metrics):
            ax = axes[row][col]
            for order in orders:
                r = results[(seed, order)]
                ax.plot(r["recorded_steps"], r[key], lw=0.8, color=_colour(order),
                        label=order_label(order), alpha=0.9)
                for step in _marks(order):
                    ax.axvline(step, color="grey", ls="--", lw=0.8)
            if log_loss and key.endswith("loss"):
                ax.set_yscale("log")
            ax.set_title(f"seed {seed}: {title}", fontsize=9)
            if row == len(seeds) - 1:
                ax.set_xlabel("step")
            ax.tick_params(labelsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(orders), frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    legend_inches = 0.35  # a fixed band for the legend, so a one-row figure does not overlap it
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_inches / fig.get_figheight()))
    return fig


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


def plot_claims(claims, ratios_by_page: dict, shown: list[str]):
    """One panel per claim: per-seed ratios other/forward (dots) and their geometric mean with the
    bootstrap interval (bar), one column per page, on a log scale with the no-effect line at 1."""
    import numpy as np

    columns = min(2, len(shown))
    rows = -(-len(shown) // columns)
    pages = list(ratios_by_page)
    fig, axes = plt.subplots(rows, columns, figsize=(max(5.0, 0.55 * len(pages)) * columns,
                                                     4.2 * rows), squeeze=False, sharey=True)
    for ax, claim in zip(axes.flat, shown):
        for x, name in enumerate(pages):
            per_seed = ratios_by_page[name]
            if claim not in per_seed:
                continue
            values = per_seed[claim].to_numpy(dtype=float)
            ax.scatter(np.full(len(values), x) + np.linspace(-0.15, 0.15, len(values)), values,
                       s=12, color=ORDER_COLOURS["backward"], alpha=0.8, zorder=3)
            for order in per_seed.index.get_level_values("order").unique():
                row = claims.loc[(name, order, claim)]
                if np.isfinite(row["low"]):
                    ax.errorbar(x + 0.3, row["ratio"], fmt="none", ecolor="black", capsize=3,
                                yerr=[[row["ratio"] - row["low"]], [row["high"] - row["ratio"]]])
                ax.scatter([x + 0.3], [row["ratio"]], marker="D", s=22, color="black", zorder=4)
        ax.axhline(1, color="grey", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(pages)), pages, rotation=60, ha="right", fontsize=8)
        ax.set_title(claim, fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("other order / forward (per seed)")
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
