"""Evaluating an iterate: loss and accuracy on fixed subsets of the train and test sets.

An evaluation is one forward pass over the chosen examples in large chunks. The sums (loss,
correct predictions) stay on the device and come to the host once per evaluation, so a GPU is
never made to wait chunk by chunk. Each chunk's loss is summed in the network's dtype and the
chunk sums are added in float64, as before this change (then per chunk, on the host), so on the
CPU, whose chunk size is unchanged, the values are the same bit for bit.

`Evaluator.many` evaluates the iterates of a batched group side by side (vmap over their stacked
tensors); its values equal one-by-one evaluation up to float rounding (tested to 1e-10 in float64).
"""
from __future__ import annotations

import torch
from torch.func import functional_call, vmap
from torch.nn import functional as F

from .data import Dataset
from .memory import activation_bytes_per_example
from .seeding import generator

__all__ = ["Evaluator", "loss_function", "network_tensors", "gpu_chunk"]

_CPU_CHUNK = 2048  # on 2 CPU cores larger chunks were no faster (measured with the bench)
_GPU_CHUNK_BYTES = 2 ** 30  # activations one GPU chunk may take
_GPU_CHUNK_RANGE = (256, 65536)
# a forward pass without gradients holds a few activations at once (a block's input, output and
# residual): four times the largest one per example
_LIVE_ACTIVATIONS = 4


def gpu_chunk(bytes_per_example: int) -> int:
    """Examples per GPU chunk: about 1 GiB of live activations, within 256–65,536."""
    low, high = _GPU_CHUNK_RANGE
    return max(low, min(high, _GPU_CHUNK_BYTES // max(1, bytes_per_example)))


def loss_function(task: str):
    """Cross-entropy for classification, mean squared error for regression (the paper's tasks)."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def network_tensors(state: dict) -> dict[str, torch.Tensor]:
    """The network tensors of either state form (sgd_maps' flat one or optimizer_maps' nested)."""
    return {**state["params"], **state["buffers"]} if "optimizer" in state else state


class Evaluator:
    """Metrics of a state on subsets drawn once from the seed's "eval-subsets" stream, so that
    every order of one seed is measured on the same examples. Never changes the model's tensors.

    ``chunk`` is the number of examples per forward pass; 0 sizes it for the device: 2048 on a
    CPU, and on a GPU as many as fit in about 1 GiB of live activations (256–65,536; the whole of
    FashionMNIST's test set and most of its training set in one chunk for the MLP).
    """

    def __init__(self, model, data: Dataset, seed: int, train_size: int, test_size: int,
                 chunk: int = 0):
        if not isinstance(chunk, int) or chunk < 0:
            raise ValueError(f"chunk must be an integer >= 0 (0 = sized for the device); "
                             f"got {chunk!r}")
        self.model, self.data = model, data
        g = generator(seed, "eval-subsets")
        self.train_rows = self._subset(len(data.x_train), train_size, g)
        self.test_rows = self._subset(len(data.x_test), test_size, g)
        self.param_names = [n for n, _ in model.named_parameters()]
        self._loss = loss_function(data.task)
        self.chunk = chunk or self._default_chunk()

    def _subset(self, n: int, size: int, g: torch.Generator) -> torch.Tensor:
        rows = torch.randperm(n, generator=g)[:size] if 0 < size < n else torch.arange(n)
        return rows.sort().values.to(self.data.x_train.device)

    def _default_chunk(self) -> int:
        if self.data.x_train.device.type != "cuda":
            return _CPU_CHUNK
        largest = activation_bytes_per_example(self.model, self.data.x_train[:1], largest=True)
        return gpu_chunk(_LIVE_ACTIVATIONS * largest)

    @property
    def examples(self) -> int:
        """Examples one evaluation passes through the network (train and test subsets)."""
        return len(self.train_rows) + len(self.test_rows)

    def _chunk_sums(self, tensors: dict, x: torch.Tensor, y: torch.Tensor):
        """The loss summed over one chunk (in float64) and its correct predictions."""
        out = functional_call(self.model, tensors, (x,))
        loss = self._loss(out, y, reduction="sum").double()
        if self.data.task != "classification":
            return loss, torch.zeros((), dtype=torch.int64, device=x.device)
        return loss, (out.argmax(1) == y).sum()

    def _sums(self, chunk_sums, x, y, rows, chunk: int):
        """Device tensors: ``chunk_sums`` accumulated over ``rows``, ``chunk`` rows at a time."""
        total_loss, correct = 0, 0
        for start in range(0, len(rows), chunk):
            idx = rows[start:start + chunk]
            loss, right = chunk_sums(x[idx], y[idx])
            total_loss, correct = total_loss + loss, correct + right
        return total_loss, correct

    def _metrics(self, values: list, n_train: int, n_test: int) -> dict:
        train_loss, test_loss, train_correct, test_correct = values
        per_example = 1 if self.data.task == "classification" else self.data.y_train.shape[1]
        classification = self.data.task == "classification"
        return {"train_loss": train_loss / (n_train * per_example),
                "test_loss": test_loss / (n_test * per_example),
                "train_acc": train_correct / n_train if classification else None,
                "test_acc": test_correct / n_test if classification else None}

    @torch.no_grad()
    def _evaluate(self, chunk_sums, chunk: int) -> list[torch.Tensor]:
        was_training = self.model.training
        self.model.eval()  # BatchNorm: use the running statistics carried in the state
        try:
            train = self._sums(chunk_sums, self.data.x_train, self.data.y_train, self.train_rows,
                               chunk)
            test = self._sums(chunk_sums, self.data.x_test, self.data.y_test, self.test_rows,
                              chunk)
        finally:
            self.model.train(was_training)
        return [train[0], test[0], train[1], test[1]]

    def __call__(self, state: dict) -> dict:
        tensors = network_tensors(state)
        sums = self._evaluate(lambda x, y: self._chunk_sums(tensors, x, y), self.chunk)
        # the one host transfer of this evaluation
        values = torch.stack([s.double() for s in sums]).tolist()
        return self._metrics(values, len(self.train_rows), len(self.test_rows))

    def many(self, states: list[dict]) -> list[dict]:
        """The metrics of several states, evaluated side by side (one vmapped forward pass per
        chunk of ``chunk // len(states)`` examples, one host transfer for all)."""
        if not states:
            return []
        stacked = {k: torch.stack([network_tensors(s)[k] for s in states])
                   for k in network_tensors(states[0])}

        side_by_side = vmap(self._chunk_sums, in_dims=(0, None, None))
        sums = self._evaluate(lambda x, y: side_by_side(stacked, x, y),
                              max(1, self.chunk // len(states)))
        values = torch.stack([s.double() for s in sums], dim=1).tolist()
        return [self._metrics(v, len(self.train_rows), len(self.test_rows)) for v in values]

    def params_vector(self, state: dict) -> torch.Tensor:
        tensors = network_tensors(state)
        return torch.cat([tensors[n].reshape(-1) for n in self.param_names])
