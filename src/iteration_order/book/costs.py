"""What the book's figure pages will cost before anything runs: ``python -m iteration_order.book
cost --profile paper [--device cuda|cpu]``.

Covers the pages of the ``orders`` template (every figure page and the momentum/Adam pages): their
runs are `TrajectoryConfig`s, which `cost.estimate_costs` prices exactly in map applications and
evaluations and by a timed warm-up on the engine and group width each run will use. The other
templates (theory, Appendices C and D, Theorem 2.6, sharpness, summary) run their own studies and
are listed as not covered. Runs shared by several pages (Figures 3, 7 and 10 share their forward
runs) are priced on each page and counted once in the total. Data sets missing here are timed on
fake data of the same shapes, with evaluations priced at the official set sizes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..cost import CostEstimate, estimate_costs, format_seconds
from ..orders import Forward, as_order
from ..devices import check_device, torch_device
from ..trajectory import Runtime, TrajectoryConfig
from ..validation import size_problems
from .orders import OrdersExperiment
from .registry import ROOT, load_pages, resolved_parameters

__all__ = ["COVERED_TEMPLATE", "PageCost", "page_costs", "render_costs", "ESTIMATES",
           "write_estimates", "stored_estimates", "parameters_digest", "current_estimates"]

# The estimates the page headers quote (`book cost --write`): what a rerun of each figure page
# costs at each profile, priced once on one machine, so that a header does not change with the
# timing noise of the machine that renders it.
ESTIMATES = ROOT / "results" / "cost-estimates.json"
ESTIMATED_PROFILES = ("quick", "cpu", "paper")

COVERED_TEMPLATE = "orders"


@dataclass(frozen=True)
class PageCost:
    page: str
    estimates: tuple[CostEstimate, ...]

    @property
    def seconds(self) -> float:
        return sum(e.seconds for e in self.estimates)

    def engines(self) -> str:
        """The engines of the page's costly (non-forward) runs, with their group widths."""
        names = sorted({e.engine if e.engine == "sequential" else f"batched, group {e.group_size}"
                        for e in self.estimates if as_order(e.config.order) != Forward()})
        return "; ".join(names) or "sequential"


def _page_configs(name: str, profile: str) -> tuple[list[TrajectoryConfig], str]:
    params = resolved_parameters(name, profile)
    return OrdersExperiment.from_parameters(params).configs(), params.get("engine", "auto")


def page_costs(profile: str, device: str = "cpu", pages: list[str] | None = None,
               data_root: str | None = None) -> tuple[list[PageCost], list[str]]:
    """Estimates for the covered pages (all, or ``pages``), and the pages not covered.

    Each run is timed as the book runs it on one process: one thread on a CPU (what
    ``run --jobs N`` gives each worker), and the page's own ``engine`` setting."""
    check_device("device", device)  # 'tpu', 'cuda:abc': a message, not a torch traceback
    torch_device(device)  # a CUDA request without CUDA fails here, before any warm-up
    registry = load_pages()
    unknown = [p for p in pages or [] if p not in registry]
    if unknown:
        raise ValueError(f"unknown page(s) {unknown}; pages are: {', '.join(registry)}")
    chosen = [p for p in registry if not pages or p in pages]
    covered = [p for p in chosen if registry[p]["template"] == COVERED_TEMPLATE
               and profile in registry[p].get("profiles", {})]  # quick: MLP pages only
    # absurd sizes refused before any config is built (building one enumerates its steps)
    too_big = [f"{name}: {problem}" for name in covered
               for problem in size_problems(resolved_parameters(name, profile))]
    if too_big:
        raise ValueError("; ".join(too_big))
    configs = {name: _page_configs(name, profile) for name in covered}
    # one estimate over all pages per engine setting: pages of the same model and data share
    # one warm-up, so their estimates are consistent with each other
    priced: dict[tuple[str, TrajectoryConfig], CostEstimate] = {}
    for engine in sorted({engine for _, engine in configs.values()}):
        wanted = list(dict.fromkeys(c for page_configs, e in configs.values() if e == engine
                                    for c in page_configs))
        runtime = Runtime(device=device, threads=1, engine=engine, data_root=data_root,
                          progress=False)
        for estimate in estimate_costs(wanted, runtime, stand_in=True):
            priced[(engine, estimate.config)] = estimate
    results = [PageCost(name, tuple(priced[(engine, c)] for c in page_configs))
               for name, (page_configs, engine) in configs.items()]
    return results, [p for p in chosen if p not in covered]


def render_costs(costs: list[PageCost], not_covered: list[str], profile: str, device: str,
                 jobs: int = 1) -> str:
    """A markdown table: one row per page, then all pages with shared runs counted once."""
    lines = [f"Estimated cost of the `{COVERED_TEMPLATE}` pages at profile `{profile}` on "
             f"{device} (one thread per run on a CPU), before anything runs:", "",
             "| page | runs | map applications | evaluations | engine (non-forward runs) | "
             "estimated time |", "|---|---:|---:|---:|---|---:|"]
    unique: dict[tuple, CostEstimate] = {}
    for page in costs:
        apps = sum(e.applications for e in page.estimates)
        evals = sum(e.evaluations for e in page.estimates)
        lines.append(f"| {page.page} | {len(page.estimates)} | {apps:,} | {evals:,} | "
                     f"{page.engines()} | {format_seconds(page.seconds)} |")
        for e in page.estimates:
            unique.setdefault(tuple(sorted(e.config.identity().items())), e)
    total = sum(e.seconds for e in unique.values())
    lines.append(f"| **all pages** (shared runs once) | {len(unique)} | "
                 f"{sum(e.applications for e in unique.values()):,} | "
                 f"{sum(e.evaluations for e in unique.values()):,} | | "
                 f"**{format_seconds(total)}** |")
    lines.append("")
    if jobs > 1:
        lines.append(f"With {jobs} parallel jobs: about {format_seconds(total / jobs)}.")
    stand_ins = sorted({e.config.dataset for e in unique.values() if e.stand_in})
    if stand_ins:
        lines.append(f"Timed on fake data of the same shapes (the data is not here): "
                     f"{', '.join(stand_ins)}; their evaluations are priced at the official "
                     f"set sizes.")
    if not_covered:
        lines.append(f"Not covered (other templates, their own studies): "
                     f"{', '.join(not_covered)}.")
    return "\n".join(lines)


def write_estimates(device: str = "cpu", path: Path = ESTIMATES) -> Path:
    """Price every figure page at every profile of `ESTIMATED_PROFILES` on ``device`` (one thread
    per run on a CPU) and store the seconds, with the machine and the day, at ``path``."""
    import platform
    from datetime import datetime, timezone

    from ..cache import atomic_write_json

    pages: dict[str, dict[str, dict]] = {}
    for profile in ESTIMATED_PROFILES:
        for cost in page_costs(profile, device)[0]:
            pages.setdefault(cost.page, {})[profile] = {
                "seconds": round(cost.seconds, 1),
                "parameters": parameters_digest(cost.page, profile)}
    machine = f"{platform.machine()} ({os.cpu_count()} cores)" if device == "cpu" else device
    return atomic_write_json(path, {"device": device, "machine": machine,
                                    "day": f"{datetime.now(timezone.utc):%Y-%m-%d}",
                                    "pages": pages})


def stored_estimates(path: Path | None = None) -> dict:
    """What `write_estimates` stored (empty without a file)."""
    from ..cache import read_json

    path = path or ESTIMATES
    return read_json(path) if path.is_file() else {}


def parameters_digest(name: str, profile: str) -> str:
    """Names the parameters a page's estimate was priced for: a header quotes a stored estimate
    only while the page still has them (a redesigned page is priced again, never misquoted)."""
    text = json.dumps(resolved_parameters(name, profile), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_estimates(name: str, stored: dict) -> tuple[dict[str, float], list[str]]:
    """Of what `stored_estimates` read, the seconds of ``name``'s profiles that were priced for
    the parameters they have now, and the profiles whose stored estimate was not (other
    parameters, a profile the page no longer has, or an estimate stored before estimates named
    their parameters)."""
    priced = stored.get("pages", {}).get(name, {})
    profiles = load_pages()[name].get("profiles", {})
    current, stale = {}, []
    for profile, entry in priced.items():
        if (isinstance(entry, dict) and profile in profiles
                and entry.get("parameters") == parameters_digest(name, profile)):
            current[profile] = entry["seconds"]
        else:
            stale.append(profile)
    return current, stale
