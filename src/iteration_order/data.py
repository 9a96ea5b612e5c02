"""Data sets as device-resident tensors, loaded once and sliced by the batch schedule.

Sources, by data set name:

* ``synthetic-x2``, ``synthetic-cos10``, ``synthetic-x3`` — App. A.1: y = f(x) at the 101 points
  x_i = -1 + 2i/100. The paper does not say what its test set is; we use the 100 midpoints between
  the training points (an interpolation test).
* ``fashionmnist``, ``cifar10``, ``cifar100`` — torchvision's readers on a data root. Nothing is
  downloaded unless ``download=True`` is passed explicitly; a missing file raises
  `DataNotFoundError` naming the path and how to get it.
* ``cifar10-subset`` or ``npz:NAME`` — pre-placed tensors in ``<root>/<name>.npz`` with arrays
  ``x_train [N,H,W,C] uint8``, ``y_train [N]``, ``x_test``, ``y_test`` (and optionally
  ``classes``). The loaded `Dataset` says whether it is a subset of the official set.

Images are scaled to [0, 1] and standardised per channel with the training split's own mean and
standard deviation; a channel that is constant over the training split carries no information and
becomes 0 (centred, divided by 1) rather than 0/0. There is no augmentation: the paper trains without regularisation.
``fake=True`` replaces any image set by Gaussian noise and random labels with the real shapes, for
smoke runs that must not read files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .seeding import generator

__all__ = ["Dataset", "load_dataset", "DataNotFoundError", "DATASET_NAMES", "resolve_data_root"]


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not under the data root."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str  # "classification" (cross-entropy, accuracy) or "regression" (mean squared error)
    num_outputs: int
    note: str  # where it came from, and whether it is a subset or fake

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.x_train)


SYNTHETIC = {
    "synthetic-x2": lambda x: x ** 2,
    "synthetic-cos10": lambda x: torch.cos(10 * x),
    "synthetic-x3": lambda x: x ** 3,
}
# name -> (torchvision class name, official train/test sizes, classes, files that must exist)
TORCHVISION = {
    "fashionmnist": ("FashionMNIST", (60000, 10000), 10,
                     [f"FashionMNIST/raw/{f}" for f in ("train-images-idx3-ubyte",
                      "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                      "t10k-labels-idx1-ubyte")]),
    "cifar10": ("CIFAR10", (50000, 10000), 10,
                [f"cifar-10-batches-py/{f}" for f in
                 ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]]),
    "cifar100": ("CIFAR100", (50000, 10000), 100,
                 [f"cifar-100-python/{f}" for f in ("train", "test", "meta")]),
}
NPZ_ALIASES = {"cifar10-subset": "cifar10-subset"}
DATASET_NAMES = (*SYNTHETIC, *TORCHVISION, *NPZ_ALIASES, "npz:<name>")
_FAKE_SIZES = (512, 256)
_GET_DATA = (
    "Pass data_root=... or set DATA_ROOT to a folder holding the files, or call with "
    "download=True on a machine with internet access (torchvision then fetches them). "
    "See the README section 'Data'.")


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    root = data_root if data_root is not None else os.environ.get("DATA_ROOT")
    if not root:
        raise DataNotFoundError("no data root given: pass data_root=... or set DATA_ROOT. "
                                + _GET_DATA)
    return Path(root).expanduser()


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor):
    """Scale uint8 images [N, C, H, W] to [0,1], then standardise with the training split's stats.

    A channel constant over the training split (a blank channel) has no spread to divide by: it is
    centred on its value and divided by 1, so its training values are exactly 0 (0/0 would make
    every input NaN, and a float round-off std of 1e-8 would blow the channel up instead)."""
    # decided on the integers, where "constant" is exact
    constant = (x_train.amax(dim=(0, 2, 3)) == x_train.amin(dim=(0, 2, 3)))[None, :, None, None]
    x_train, x_test = x_train.float() / 255, x_test.float() / 255
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True)
    mean = torch.where(constant, x_train[:1, :, :1, :1], mean)
    std = torch.where(constant, torch.ones_like(std), std)
    return (x_train - mean) / std, (x_test - mean) / std


def _synthetic(name: str):
    f = SYNTHETIC[name]
    x_train = torch.linspace(-1, 1, 101, dtype=torch.float64)
    x_test = (x_train[:-1] + x_train[1:]) / 2
    note = f"{name}: 101 training points on [-1, 1] (App. A.1), 100 midpoints as test set"
    return (x_train[:, None].float(), f(x_train)[:, None].float(), x_test[:, None].float(),
            f(x_test)[:, None].float(), "regression", 1, note)


def _torchvision(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls_name, official, classes, files = TORCHVISION[name]
    missing = [str(root / f) for f in files if not (root / f).is_file()]
    if missing and not download:
        raise DataNotFoundError(
            f"data set {name!r} not found under data root {str(root)!r}: missing "
            f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}. " + _GET_DATA)
    cls = getattr(tvd, cls_name)
    splits = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    xs, ys = [], []
    for ds in splits:
        data = torch.as_tensor(np.asarray(ds.data))
        xs.append(data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2))
        ys.append(torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))
    x_train, x_test = _standardise(*xs)
    # the note travels into results and pages: it names the layout under the data root, never
    # this machine's absolute path
    note = (f"{name}: the full official set ({official[0]} train, {official[1]} test), read from "
            f"torchvision's files under the data root")
    return x_train, ys[0], x_test, ys[1], "classification", classes, note


def _npz(name: str, root: Path):
    path = root / f"{name}.npz"
    if not path.is_file():
        raise DataNotFoundError(
            f"data set {name!r}: expected the file {str(path)!r} (arrays x_train [N,H,W,C] uint8, "
            f"y_train, x_test, y_test). Place it under the data root or set DATA_ROOT.")
    with np.load(path, allow_pickle=False) as arrays:
        needed = ("x_train", "y_train", "x_test", "y_test")
        absent = [k for k in needed if k not in arrays.files]
        if absent:
            raise ValueError(f"{str(path)!r} lacks arrays {absent}; it has {arrays.files}")
        x_train, y_train, x_test, y_test = (torch.as_tensor(arrays[k]) for k in needed)
        classes = len(arrays["classes"]) if "classes" in arrays.files else None
    if x_train.ndim != 4 or x_train.dtype != torch.uint8:
        raise ValueError(f"{str(path)!r}: x_train must be uint8 [N,H,W,C]; got "
                         f"{x_train.dtype} {list(x_train.shape)}")
    y_train, y_test = y_train.long(), y_test.long()
    classes = classes or int(max(y_train.max(), y_test.max())) + 1
    x_train, x_test = _standardise(x_train.permute(0, 3, 1, 2), x_test.permute(0, 3, 1, 2))
    official = TORCHVISION.get(name.split("-")[0], (None, None))[1]
    sizes = (len(x_train), len(x_test))
    if official is None:
        extent = "not known to be a subset of an official set"
    elif sizes == official:
        extent = f"the full size of {name.split('-')[0]}"
    else:
        extent = (f"a SUBSET of {name.split('-')[0]} (official {official[0]} train, "
                  f"{official[1]} test)")
    note = f"{name}: {sizes[0]} train, {sizes[1]} test images from {path.name} under the data root; {extent}"
    return x_train, y_train, x_test, y_test, "classification", classes, note


def _fake(name: str, shape: tuple[int, ...], classes: int, seed: int):
    g = generator(seed, f"fake-data/{name}")
    n_train, n_test = _FAKE_SIZES
    x = torch.randn((n_train + n_test, *shape), generator=g)
    y = torch.randint(classes, (n_train + n_test,), generator=g)
    note = (f"FAKE {name}: Gaussian noise with the real shapes {list(shape)}, random labels "
            f"({n_train} train, {n_test} test); for smoke runs only")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], "classification", classes, note


_FAKE_SHAPES = {"fashionmnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
                "cifar100": ((3, 32, 32), 100), "cifar10-subset": ((3, 32, 32), 10)}


def load_dataset(name: str, data_root: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", download: bool = False,
                 fake: bool = False, seed: int = 0) -> Dataset:
    """Load a data set by name into tensors on ``device`` (see the module docstring)."""
    if name in SYNTHETIC:
        parts = _synthetic(name)
    elif fake:
        if name not in _FAKE_SHAPES:
            raise ValueError(f"no fake version of {name!r}; fake data exists for "
                             f"{', '.join(_FAKE_SHAPES)}")
        shape, classes = _FAKE_SHAPES[name]
        parts = _fake(name, shape, classes, seed)
    elif name in TORCHVISION:
        parts = _torchvision(name, resolve_data_root(data_root), download)
    elif name in NPZ_ALIASES or name.startswith("npz:"):
        parts = _npz(NPZ_ALIASES.get(name, name[4:]), resolve_data_root(data_root))
    else:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASET_NAMES)}")
    x_train, y_train, x_test, y_test, task, num_outputs, note = parts
    dev = torch.device(device)
    return Dataset(name, x_train.contiguous().to(dev), y_train.to(dev), x_test.contiguous().to(dev),
                   y_test.to(dev), task, num_outputs, note)
