"""`book run --device cpu` reaches every page kind (issue 23): the runner sets
$ITERATION_ORDER_DEVICE, and every template resolves its device through the one resolver,
`parallel.run_device` (`device_runtime` wraps it for a `Runtime`)."""
from __future__ import annotations

import json
import re

import torch

from iteration_order import Runtime
from iteration_order.book.registry import ROOT
from iteration_order.parallel import DEVICE_ENV, device_runtime, run_device


def test_the_resolver_follows_the_environment_even_where_cuda_is_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert run_device(Runtime()) == "cpu" and device_runtime(Runtime()).device == "cpu"
    monkeypatch.delenv(DEVICE_ENV)
    assert run_device(Runtime()) == "cuda" and device_runtime(Runtime()).device == "cuda"
    assert device_runtime(Runtime(device="cpu")).device == "cpu"  # an explicit device stays


def _code(template: str) -> str:
    nb = json.loads((ROOT / "notebooks" / f"{template}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_template_that_computes_takes_its_device_from_the_resolver():
    computing = {"orders", "order_average", "lie_bracket", "sharpness", "stationary"}
    for template in sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")):
        code = _code(template)
        bare = [m.start() for m in re.finditer(r"(?<![\w.(])Runtime\(", code)
                if not code[:m.start()].endswith(("device_runtime(", "run_device("))]
        assert bare == [], f"{template} builds a Runtime outside the device resolver"
        if template in computing:
            assert "device_runtime(Runtime(" in code or "run_device(Runtime())" in code, template
