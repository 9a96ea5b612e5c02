"""The one device resolver (`devices`): what ``auto`` means, which results a run names, where it
computes, and that the rest of the package asks it instead of torch or the environment."""
import re
from pathlib import Path

import pytest
import torch

from iteration_order import devices
from iteration_order.devices import (DEVICE_ENV, check_device, computable_here, device_type,
                                     requested_device, torch_device)
from iteration_order.trajectory import Runtime, TrajectoryConfig, result_path

SRC = Path(__file__).resolve().parents[1] / "src" / "iteration_order"


def test_auto_is_the_environment_when_set_else_this_machine(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert requested_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert requested_device("auto") == "cuda:1" and device_type("auto") == "cuda"
    assert requested_device("cpu") == "cpu"  # an explicit device is never overridden


@pytest.mark.parametrize("value", ["gpu", "auto", "cuda:x"])
def test_a_bad_environment_value_is_named(monkeypatch, value):
    monkeypatch.setenv(DEVICE_ENV, value)
    with pytest.raises(ValueError, match=re.escape(f"${DEVICE_ENV}={value!r} is not a device")):
        requested_device("auto")


def test_naming_results_needs_no_cuda_but_computing_does(monkeypatch):
    monkeypatch.setattr(devices, "cuda_here", lambda: False)
    assert device_type("cuda:0") == "cuda" and not computable_here("cuda")
    assert computable_here("cpu") and torch_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not available"):
        torch_device("cuda")
    config = TrajectoryConfig(steps=3)
    assert result_path(config, Runtime(device="cuda")).name.endswith("-cuda.json")


@pytest.mark.parametrize("value", ["tpu", "cuda:abc", "", None, 0])
def test_a_bad_device_is_refused_naming_it(value):
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, cuda:N; got"):
        check_device("device", value)


def test_nothing_else_reads_cuda_availability_or_the_device_variable():
    """The resolver is the one place: other modules ask it (seeding seeds CUDA's generators when
    present, which is not resolving a device; the GPU report describes the machine it runs on)."""
    allowed = {"devices.py", "seeding.py", "gpu_report.py"}
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name in allowed:
            continue
        text = path.read_text()
        if "torch.cuda.is_available" in text or re.search(r"environ[^\n]*DEVICE_ENV", text):
            offenders.append(str(path.relative_to(SRC)))
    assert not offenders, offenders
