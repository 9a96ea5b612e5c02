"""Data sources and models: shapes, provenance notes, and clear errors when files are missing."""
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from iteration_order import DataNotFoundError, build_model, load_dataset
from iteration_order import batch_schedule, generator


def test_synthetic_sets_follow_appendix_a1():
    for name, f in [("synthetic-x2", lambda x: x ** 2), ("synthetic-cos10", lambda x: np.cos(10 * x)),
                    ("synthetic-x3", lambda x: x ** 3)]:
        data = load_dataset(name)
        x = data.x_train[:, 0].double().numpy()
        np.testing.assert_allclose(x, -1 + 2 * np.arange(101) / 100, atol=1e-7)
        np.testing.assert_allclose(data.y_train[:, 0].numpy(), f(x), atol=1e-6)
        assert data.x_test.shape == (100, 1) and data.task == "regression"
        assert (data.x_test[:, 0] > -1).all() and (data.x_test[:, 0] < 1).all()


def write_idx(path: Path, array: np.ndarray):
    """The idx format torchvision's MNIST readers parse (magic: 0x08 = ubyte, then ndim)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", 0x0800 | array.ndim))
        fh.write(struct.pack(f">{array.ndim}I", *array.shape))
        fh.write(array.astype(np.uint8).tobytes())


def test_fashionmnist_is_read_through_torchvision_from_the_data_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte", rng.integers(0, 10, 20))
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (6, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 6))
    data = load_dataset("fashionmnist", data_root=tmp_path)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    assert data.num_outputs == 10 and data.task == "classification"
    assert abs(float(data.x_train.mean())) < 1e-5  # standardised with the training statistics
    assert str(tmp_path) not in data.note  # pages show the note: no machine's absolute path


def test_missing_files_name_the_path_and_how_to_get_them(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashionmnist", data_root=tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw" / "train-images-idx3-ubyte") in str(err.value)
    assert "DATA_ROOT" in str(err.value) and "download=True" in str(err.value)
    with pytest.raises(DataNotFoundError, match="cifar10-subset.npz"):
        load_dataset("cifar10-subset", data_root=tmp_path)
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_root=tmp_path)


def test_no_data_root_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(DataNotFoundError, match="no data root given"):
        load_dataset("cifar100")


def test_npz_tensors_report_a_subset(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cifar10-subset.npz",
             x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40, dtype=np.uint8),
             x_test=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, 10, dtype=np.uint8),
             classes=np.array([f"c{i}" for i in range(10)]))
    data = load_dataset("cifar10-subset", data_root=tmp_path)
    assert data.x_train.shape == (40, 3, 32, 32) and data.y_train.dtype == torch.int64
    assert "SUBSET of cifar10" in data.note and "40 train" in data.note
    assert str(tmp_path) not in data.note and "cifar10-subset.npz" in data.note
    assert data.num_outputs == 10


def test_npz_with_missing_arrays_is_rejected(tmp_path):
    np.savez(tmp_path / "broken.npz", x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"lacks arrays \['y_train', 'x_test', 'y_test'\]"):
        load_dataset("npz:broken", data_root=tmp_path)


def test_fake_data_has_the_real_shapes_and_is_seeded():
    a = load_dataset("cifar100", fake=True, seed=3)
    b = load_dataset("cifar100", fake=True, seed=3)
    assert a.input_shape == (3, 32, 32) and a.num_outputs == 100 and "FAKE" in a.note
    assert torch.equal(a.x_train, b.x_train)
    assert load_dataset("fashionmnist", fake=True).input_shape == (1, 28, 28)


def test_unknown_data_set():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; allowed: synthetic-x2"):
        load_dataset("mnist")


@pytest.mark.skipif(not (Path(os.environ.get("DATA_ROOT", "/nonexistent")) / "FashionMNIST").is_dir(),
                    reason="the real FashionMNIST is not under DATA_ROOT on this machine")
def test_real_fashionmnist_when_available():
    data = load_dataset("fashionmnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [6000] * 10


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg19", "vgg19_bn"])
@pytest.mark.parametrize("base", [64, 8])
def test_convolutional_models_take_32x32_images(name, base):
    model = build_model(name, (3, 32, 32), 10, seed=0, base_channels=base).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if name.startswith("resnet"):
        assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
        assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bool(norms) == (name != "vgg19")  # the plain VGG-19 has none
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == base and max(c.out_channels for c in convs) == base * (
        32 if name == "resnet50" else 8)  # ResNet-50's bottleneck expands the last stage 4×


def _torchvision_cifar(name):
    """The torchvision model with the usual CIFAR changes, as the package built it before the
    width became a parameter: the full-width models must keep exactly its parameters."""
    from torchvision import models as tv
    net = getattr(tv, name)(weights=None, num_classes=10)
    if name.startswith("resnet"):
        net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = torch.nn.Identity()
    else:
        net.avgpool, net.classifier = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(512, 10)
    return net


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg19", "vgg19_bn"])
def test_the_full_width_models_have_torchvisions_parameters(name):
    ours = build_model(name, (3, 32, 32), 10, seed=0)
    theirs = _torchvision_cifar(name)
    assert [tuple(p.shape) for p in ours.parameters()] == \
        [tuple(p.shape) for p in theirs.parameters()]


@pytest.mark.parametrize("base", [0, -8, 2.5, True])
def test_a_bad_width_is_refused_naming_it(base):
    with pytest.raises(ValueError, match=r"base_channels must be an integer >= 1 \(64 = the "
                                         r"paper's width\); got"):
        build_model("resnet18", (3, 32, 32), 10, seed=0, base_channels=base)


def test_mlp_shape_and_seeded_initialisation():
    a = build_model("mlp", (1, 28, 28), 10, seed=1, depth=5, width=500)
    b = build_model("mlp", (1, 28, 28), 10, seed=1, depth=5, width=500)
    c = build_model("mlp", (1, 28, 28), 10, seed=2, depth=5, width=500)
    linears = [m for m in a if isinstance(m, torch.nn.Linear)]
    assert [l.out_features for l in linears] == [500] * 5 + [10]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[1].weight, c[1].weight)


def test_bad_models():
    with pytest.raises(ValueError, match="unknown model 'resnet34'; allowed: mlp, resnet18"):
        build_model("resnet34", (3, 32, 32), 10, seed=0)
    with pytest.raises(ValueError, match="needs 3-channel images"):
        build_model("vgg19", (1, 28, 28), 10, seed=0)
    with pytest.raises(ValueError, match="MLP depth must be an integer >= 1"):
        build_model("mlp", (1,), 1, seed=0, depth=0)


def test_schedule_draws_each_epoch_without_replacement():
    s = batch_schedule(20, 8, 7, generator(0, "schedule"))
    assert s.shape == (7, 8) and s.dtype == torch.int64
    for epoch in range(3):  # 2 batches per epoch, 4 examples dropped
        rows = s[2 * epoch: 2 * epoch + 2].flatten()
        assert len(set(rows.tolist())) == len(rows)
    assert torch.equal(s, batch_schedule(20, 8, 7, generator(0, "schedule")))
    assert not torch.equal(s, batch_schedule(20, 8, 7, generator(1, "schedule")))
    full = batch_schedule(101, 1, 101, generator(0, "schedule"))
    assert sorted(full.flatten().tolist()) == list(range(101))


@pytest.mark.parametrize("args, message", [
    ((10, 11, 5), "batch_size=11 is larger than the data set \\(10 training examples\\)"),
    ((10, 2, 0), "steps must be an integer >= 1; got 0"),
    ((10, 2, -3), "steps must be an integer >= 1; got -3"),
    ((10, 0, 3), "batch_size must be an integer >= 1"),
])
def test_bad_schedules(args, message):
    with pytest.raises(ValueError, match=message):
        batch_schedule(*args, generator(0, "schedule"))


def test_he_initialisation_of_the_mlp():
    mlp = build_model("mlp", (1, 28, 28), 10, seed=0, depth=5, width=500, init="he")
    hidden = mlp[3]  # second linear layer: 500 -> 500
    with torch.no_grad():
        assert abs(float(hidden.weight.std()) - (2 / 500) ** 0.5) < 0.002
        assert float(hidden.bias.abs().max()) == 0.0
    with pytest.raises(ValueError, match="unknown init 'glorot'"):
        build_model("mlp", (1,), 1, seed=0, init="glorot")
