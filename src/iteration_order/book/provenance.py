"""What produced a page: the package and its commit, Python and torch, and the device, engine and
torch version of every run the page loads.

Each template glues `provenance(...)` as ``provenance``; the page header shows it. A page whose
runs came from more than one device is refused rather than mixed silently (CPU and GPU agree only
to a tolerance), unless the page says it compares devices.
"""
from __future__ import annotations

import platform
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from .. import __version__
from ..devices import here

__all__ = ["provenance", "run_devices", "git_commit", "MixedDevicesError"]

_ROOT = Path(__file__).resolve().parents[3]
# what a page is computed from: the package, the templates and the registry
_SOURCES = ("src", "notebooks", "experiments.yml", "pyproject.toml")


class MixedDevicesError(ValueError):
    """The runs of one page came from different devices."""


def git_commit() -> str:
    """The repository's commit, marked when the working tree differs from it; 'unknown' outside a
    git checkout (an installed copy of the package)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=_ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        # only what determines a page counts: a run itself writes its log and its notebook
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *_SOURCES], cwd=_ROOT, text=True, capture_output=True,
                               check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes" if dirty.strip() else "")


def run_devices(results: Iterable[dict]) -> Counter:
    """(device type, engine, torch version) of each run, counted."""
    seen = Counter()
    for result in results:
        runtime = result.get("runtime", {})
        device = str(runtime.get("device", "unknown")).split(":")[0]
        seen[(device, result.get("engine", runtime.get("engine", "n/a")),
              runtime.get("torch", "unknown"))] += 1
    return seen


def provenance(results: Iterable[dict] | None = None, allow_mixed: bool = False) -> str:
    """Markdown naming what produced the page: package version and git commit, Python and torch
    here, and per device/engine/torch version the number of runs loaded (``results``: the run
    dicts the page shows; None for a page with no cached runs, computed in the notebook)."""
    parts = [f"package iteration-order {__version__} at commit `{git_commit()}`",
             f"rendered with Python {platform.python_version()}, torch {torch.__version__} "
             f"({platform.machine()})"]
    if results is not None:
        seen = run_devices(results)
        devices = {device for device, _, _ in seen}
        if len(devices) > 1 and not allow_mixed:
            raise MixedDevicesError(
                f"this page's runs come from several devices ({', '.join(sorted(devices))}); CPU "
                f"and GPU agree only to a tolerance, so a page shows runs of one device. Runs: "
                + "; ".join(f"{n} on {d} ({e}, torch {t})" for (d, e, t), n in seen.items()))
        parts.append("runs: " + "; ".join(
            f"{n} computed on {device} with the {engine} engine (torch {version})"
            for (device, engine, version), n in sorted(seen.items())))
    else:
        parts.append(f"computed in the notebook on {_here()}")
    return "; ".join(parts) + "."


def _here() -> str:
    return here()
