import pytest
import torch

from iteration_order import MLP, set_threads


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tests compare tensors bit for bit; fix the thread count so reductions are ordered the same.
    set_threads(1)


@pytest.fixture
def tiny_problem():
    """A 2×8 MLP, 24 regression examples and a schedule of 6 batches of 4 (float64 for exactness)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MLP(depth=2, width=8, in_features=3, out_features=1).double()
    inputs = torch.randn(24, 3, generator=g, dtype=torch.float64)
    targets = torch.randn(24, 1, generator=g, dtype=torch.float64)
    schedule = torch.randperm(24, generator=g).view(6, 4)
    return model, inputs, targets, schedule
