"""The batch schedule: which examples each step uses, fixed before training starts.

The schedule is the seam where an iteration order plugs in: step i's map T_i is SGD on the rows
``inputs[schedule[i-1]]``, and forward and backward runs of one seed share the same schedule.
"""
from __future__ import annotations

import torch

__all__ = ["batch_schedule"]


def batch_schedule(num_examples: int, batch_size: int, steps: int,
                   generator: torch.Generator) -> torch.Tensor:
    """A ``[steps, batch_size]`` int64 CPU tensor of example indices.

    Examples are drawn without replacement within an epoch (one ``randperm`` per epoch from the
    given CPU generator, so the order is identical on every device); the last
    ``num_examples % batch_size`` examples of each epoch's permutation are dropped so that no batch
    straddles two epochs or repeats an example.
    """
    for name, value, low in (("num_examples", num_examples, 1), ("batch_size", batch_size, 1),
                             ("steps", steps, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if batch_size > num_examples:
        raise ValueError(f"batch_size={batch_size} is larger than the data set "
                         f"({num_examples} training examples)")
    per_epoch = num_examples // batch_size
    epochs = -(-steps // per_epoch)
    rows = [torch.randperm(num_examples, generator=generator)[: per_epoch * batch_size]
            .view(per_epoch, batch_size) for _ in range(epochs)]
    return torch.cat(rows)[:steps].contiguous()
