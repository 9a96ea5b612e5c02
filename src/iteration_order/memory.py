"""Memory estimates made before a run: one batched trajectory, one evaluation chunk.

The batched engine's group width and the evaluator's chunk on a GPU are sized from these. They are
estimates (counted, not measured; no GPU has checked them yet): parameter-sized copies from the
maps (`trajectory_copies`) and activations from one forward pass of a single example with hooks
on the leaf modules.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["activation_bytes_per_example", "trajectory_bytes"]

# autograd keeps about one input or output per layer for the backward pass, and the backward
# pass allocates gradients of the same size: about twice the forward outputs per example
_TRAINING_ACTIVATION_FACTOR = 2


def activation_bytes_per_example(model: nn.Module, example: torch.Tensor,
                                 largest: bool = False) -> int:
    """Bytes of all leaf-module outputs for one example (``example`` is ``[1, ...]``): what a
    training step keeps for its backward pass. ``largest``: the largest single output instead,
    the scale of what a forward pass without gradients holds at once."""
    sizes: list[int] = []

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    model.eval()  # batch statistics of one example are undefined; sizes do not depend on mode
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return max(sizes, default=0) if largest else sum(sizes)


def trajectory_bytes(model: nn.Module, maps, example: torch.Tensor) -> int:
    """Bytes one trajectory of the batched engine holds: its parameter-sized copies (parameters,
    gradients, temporaries, optimiser state), its buffers and its training activations."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    activations = (_TRAINING_ACTIVATION_FACTOR * maps.examples_per_step()
                   * activation_bytes_per_example(model, example))
    return maps.trajectory_copies() * params + buffers + activations
