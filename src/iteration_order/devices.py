"""The one place a device name is read, checked and resolved.

A device is named ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``auto`` means
``$ITERATION_ORDER_DEVICE`` when it is set, else cuda when this machine has it, else cpu. Two
questions are asked of a device and kept apart on purpose:

* `device_type` — which results a run reads and writes (``<hash>-cpu.json`` or ``-cuda.json``).
  It never needs CUDA to be here, so a CPU machine can render pages from a GPU's results.
* `torch_device` — where a run computes. Asking for cuda without CUDA is an error that says so.

Every other module (the trajectory runner, the parallel runner, the studies, the page runner, the
cost model, the benchmark, the provenance line) asks these functions; none reads
``torch.cuda.is_available()`` or the environment variable itself. This module is not part of the
trajectory fingerprint: which device a run used is part of its file name, not of its code.
"""
from __future__ import annotations

import os
import re

import torch

__all__ = ["DEVICE_ENV", "DEVICE_FORMS", "check_device", "requested_device", "device_type",
           "torch_device", "cuda_here", "computable_here", "here"]

DEVICE_ENV = "ITERATION_ORDER_DEVICE"  # what device="auto" means: cpu | cuda | cuda:N
DEVICE_FORMS = "auto, cpu, cuda, cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda|cuda:\d{1,3}")


def check_device(name: str, value: object) -> str:
    """``value`` if it is a device name (checked before torch sees it, so that ``tpu`` or
    ``cuda:abc`` is a message naming ``name``, not a torch traceback)."""
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise ValueError(f"{name} must be one of {DEVICE_FORMS}; got {value!r}")
    return value


def cuda_here() -> bool:
    return torch.cuda.is_available()


def here() -> str:
    """The device type this machine computes on by default: cuda when present, else cpu."""
    return "cuda" if cuda_here() else "cpu"


def requested_device(device: str) -> str:
    """``device`` with ``auto`` made explicit: ``$ITERATION_ORDER_DEVICE`` when set, else `here`.
    Needs no CUDA (a cuda request is returned as it is)."""
    check_device("device", device)
    if device != "auto":
        return device
    value = os.environ.get(DEVICE_ENV, "").strip()
    if not value:
        return here()
    if value == "auto" or not _DEVICE.fullmatch(value):
        raise ValueError(f"${DEVICE_ENV}={value!r} is not a device; allowed: cpu, cuda, cuda:N "
                         f"(unset: cuda when present, else cpu)")
    return value


def device_type(device: str) -> str:
    """``cpu`` or ``cuda``: the device type whose results a run with ``device`` reads and writes."""
    return torch.device(requested_device(device)).type


def computable_here(device: str) -> bool:
    """Whether a run on ``device`` can compute on this machine."""
    return device_type(device) == "cpu" or cuda_here()


def torch_device(device: str) -> torch.device:
    """The torch device a run on ``device`` computes on; an error if it asks for CUDA here."""
    dev = torch.device(requested_device(device))
    if dev.type == "cuda" and not cuda_here():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; "
                         f"use device='cpu' or 'auto'")
    return dev
