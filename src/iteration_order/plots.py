"""Figures as in the paper: one row per seed, one column per learning curve, orders overlaid."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from .orders import Reset, SwitchAt, as_order

__all__ = ["plot_curves", "order_label", "ORDER_COLOURS"]

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
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
