"""Evaluating an iterate: loss and accuracy on fixed subsets of the train and test sets."""
from __future__ import annotations

import torch
from torch.func import functional_call
from torch.nn import functional as F

from .data import Dataset
from .seeding import generator

__all__ = ["Evaluator", "loss_function", "network_tensors"]


def loss_function(task: str):
    """Cross-entropy for classification, mean squared error for regression (the paper's tasks)."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def network_tensors(state: dict) -> dict[str, torch.Tensor]:
    """The network tensors of either state form (sgd_maps' flat one or optimizer_maps' nested)."""
    return {**state["params"], **state["buffers"]} if "optimizer" in state else state


class Evaluator:
    """Metrics of a state on subsets drawn once from the seed's "eval-subsets" stream, so that
    every order of one seed is measured on the same examples. Never changes the model's tensors."""

    def __init__(self, model, data: Dataset, seed: int, train_size: int, test_size: int,
                 chunk: int = 2048):
        self.model, self.data, self.chunk = model, data, chunk
        g = generator(seed, "eval-subsets")
        self.train_rows = self._subset(len(data.x_train), train_size, g)
        self.test_rows = self._subset(len(data.x_test), test_size, g)
        self.param_names = [n for n, _ in model.named_parameters()]
        self._loss = loss_function(data.task)

    def _subset(self, n: int, size: int, g: torch.Generator) -> torch.Tensor:
        rows = torch.randperm(n, generator=g)[:size] if 0 < size < n else torch.arange(n)
        return rows.sort().values.to(self.data.x_train.device)

    @torch.no_grad()
    def _split(self, tensors, x, y, rows):
        total_loss, correct = 0.0, 0
        for start in range(0, len(rows), self.chunk):
            idx = rows[start:start + self.chunk]
            out = functional_call(self.model, tensors, (x[idx],))
            total_loss += float(self._loss(out, y[idx], reduction="sum"))
            if self.data.task == "classification":
                correct += int((out.argmax(1) == y[idx]).sum())
        per_example = 1 if self.data.task == "classification" else y.shape[1]
        loss = total_loss / (len(rows) * per_example)
        acc = correct / len(rows) if self.data.task == "classification" else None
        return loss, acc

    def __call__(self, state: dict) -> dict:
        tensors = network_tensors(state)
        was_training = self.model.training
        self.model.eval()  # BatchNorm: use the running statistics carried in the state
        try:
            train_loss, train_acc = self._split(tensors, self.data.x_train, self.data.y_train,
                                                self.train_rows)
            test_loss, test_acc = self._split(tensors, self.data.x_test, self.data.y_test,
                                              self.test_rows)
        finally:
            self.model.train(was_training)
        return {"train_loss": train_loss, "test_loss": test_loss, "train_acc": train_acc,
                "test_acc": test_acc}

    def params_vector(self, state: dict) -> torch.Tensor:
        tensors = network_tensors(state)
        return torch.cat([tensors[n].reshape(-1) for n in self.param_names])
