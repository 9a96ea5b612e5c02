"""The batched engine (vmap over stacked trajectories) against the sequential one, family by family.

Tolerance: float64 and 1e-10 (absolute and relative) for every family on the tiny models. Both
engines evaluate the same formulas; they differ only in how the batched kernels round, which
measured at most 1.1e-15 here, so 1e-10 leaves five orders of magnitude for other BLAS builds
while any real difference (a wrong map order, a skipped step, a shared state) is of order 1e-3.
The BatchNorm models put no bias before BatchNorm (as the ResNets do): such a bias has a zero
gradient up to rounding, and Adam normalises that rounding noise into steps of size up to lr·1e-8
that differ between any two summation orders, which is noise, not a difference of the engines.
"""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from iteration_order import (MLP, Runtime, TrajectoryConfig, build_model, initial_optimizer_state,
                             initial_state, iterates, optimizer_maps, run_trajectory, sgd_maps)
from iteration_order.evaluation import Evaluator, gpu_chunk
from iteration_order.functional_optim import (Adam, MomentumSGD, optimizer_state_dict,
                                              stack_optimizer_state, stacked_optimizer)
from iteration_order.memory import activation_bytes_per_example, trajectory_bytes
from iteration_order.order_average import update_maps
from iteration_order.trajectory import choose_engine, prepare

TOL = dict(rtol=1e-10, atol=1e-10)
ORDERS = [("backward", 5), ("backward", 12), ("reset:every=4", 3), ("switch:3", 4)]


def bn_net():
    return nn.Sequential(nn.Linear(3, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(),
                         nn.Linear(6, 1)).double()


def conv_net(batch_norm: bool):
    """VGG-like (convolutions, no buffers) or ResNet-like (convolution, BatchNorm) in miniature."""
    layers = [nn.Conv2d(3, 4, 3, padding=1, bias=not batch_norm)]
    layers += [nn.BatchNorm2d(4)] if batch_norm else []
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)]
    return nn.Sequential(*layers).double()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, generator=g, dtype=torch.float64)
    y = torch.randn(24, 1, generator=g, dtype=torch.float64)
    images = torch.randn(24, 3, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (24,), generator=g)
    schedule = torch.randperm(24, generator=g).view(6, 4)
    return x, y, images, labels, torch.cat([schedule, schedule.flip(0)])  # 12 steps


def families(data):
    x, y, images, labels, schedule = data
    torch.manual_seed(0)
    mlp, bn, vgg, resnet = MLP(2, 8, 3, 1).double(), bn_net(), conv_net(False), conv_net(True)
    momentum = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)  # noqa: E731
    adam = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
    return {
        "sgd, MLP": (sgd_maps(mlp, F.mse_loss, x, y, schedule, 0.1), initial_state(mlp)),
        "sgd, BatchNorm": (sgd_maps(bn, F.mse_loss, x, y, schedule, 0.1), initial_state(bn)),
        "sgd, VGG-like": (sgd_maps(vgg, F.cross_entropy, images, labels, schedule, 0.1),
                          initial_state(vgg)),
        "sgd, ResNet-like": (sgd_maps(resnet, F.cross_entropy, images, labels, schedule, 0.1),
                             initial_state(resnet)),
        "momentum, BatchNorm": (optimizer_maps(bn, F.mse_loss, x, y, schedule, momentum),
                                initial_optimizer_state(bn)),
        "adam, BatchNorm": (optimizer_maps(bn, F.mse_loss, x, y, schedule, adam),
                            initial_optimizer_state(bn)),
        "adam, ResNet-like": (optimizer_maps(resnet, F.cross_entropy, images, labels, schedule,
                                             adam), initial_optimizer_state(resnet)),
        "App. D small": (update_maps("small", mlp, F.mse_loss, x, y, schedule, 0.1, 2),
                         initial_state(mlp)),
        "App. D average": (update_maps("average", mlp, F.mse_loss, x, y, schedule, 0.1, 2),
                           initial_state(mlp)),
        "App. D regularised": (update_maps("regularised", mlp, F.mse_loss, x, y, schedule, 0.1,
                                           2, 0.01), initial_state(mlp)),
    }


def flatten(state, prefix=""):
    """Every tensor of a state (either form), keyed by its path; param_groups compared apart."""
    if isinstance(state, torch.Tensor):
        return {prefix: state}
    out = {}
    for key, value in state.items():
        if key != "param_groups":
            out.update(flatten(value, f"{prefix}/{key}"))
    return out


def assert_same_state(a, b):
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for key in fa:
        assert fa[key].dtype == fb[key].dtype and fa[key].device == fb[key].device, key
        if fa[key].dtype == torch.int64 or key.endswith("/step"):
            assert torch.equal(fa[key], fb[key]), key  # counts are exact
        else:
            torch.testing.assert_close(fa[key], fb[key], **TOL, msg=key)
    if isinstance(a, dict) and "optimizer" in a and a["optimizer"]:
        assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]


@pytest.mark.parametrize("family", ["sgd, MLP", "sgd, BatchNorm", "sgd, VGG-like",
                                    "sgd, ResNet-like", "momentum, BatchNorm", "adam, BatchNorm",
                                    "adam, ResNet-like", "App. D small", "App. D average",
                                    "App. D regularised"])
@pytest.mark.parametrize("order, group_size", ORDERS)
def test_batched_equals_sequential_for_every_family(data, family, order, group_size):
    maps, state0 = families(data)[family]
    assert maps.grouping_problem() is None
    sequential = iterates(maps, state0, order)
    batched = iterates(maps, state0, order, group_size=group_size)
    a, b = dict(sequential), dict(batched)
    assert a.keys() == b.keys()
    for n in a:
        assert_same_state(a[n], b[n])
    assert batched.applications == sequential.applications == batched.planned


def test_batchnorm_statistics_are_per_trajectory(data):
    maps, state0 = families(data)["sgd, BatchNorm"]
    batched = dict(iterates(maps, state0, "backward", group_size=12))
    # backward step n applied n maps to θ_0, so its BatchNorm counted n batches of its own
    assert [int(batched[n]["1.num_batches_tracked"]) for n in range(1, 13)] == list(range(1, 13))
    assert not torch.equal(batched[3]["1.running_mean"], batched[4]["1.running_mean"])
    assert torch.equal(state0["1.num_batches_tracked"], torch.tensor(0))  # x_0 untouched


def test_adam_state_restarts_per_trajectory(data):
    maps, state0 = families(data)["adam, BatchNorm"]
    batched = dict(iterates(maps, state0, "backward", group_size=12))
    assert [int(batched[n]["optimizer"]["state"][0]["step"]) for n in (1, 5, 12)] == [1, 5, 12]
    assert state0["optimizer"] == {}


# ------------------------------------------------------------------------------------------------
# The stacked optimisers reproduce torch.optim step by step
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1),
                                  lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                  lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99),
                                                             eps=1e-6)],
                         ids=["sgd", "momentum", "adam"])
def test_stacked_update_reproduces_torch_optim(make):
    """Three trajectories at different step counts (0, 2 and 5 steps done), six more steps each:
    float64, to 1e-14 relative (the bias corrections are powers computed by torch, not Python)."""
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 2), (2,)]
    start = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for _ in range(3)]
    grads = [[[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
              for _ in range(11)] for _ in range(3)]
    done = [0, 2, 5]
    # reference: one torch optimiser per trajectory
    reference = []
    for j in range(3):
        params = [p.clone().requires_grad_() for p in start[j]]
        optimizer = make(params)
        for k in range(done[j] + 6):
            for p, gr in zip(params, grads[j][k]):
                p.grad = gr.clone()
            optimizer.step()
        reference.append([p.detach() for p in params])
    # stacked: first catch up the later-started trajectories' head start with torch, then stack
    update = stacked_optimizer(make([torch.zeros(1, requires_grad=True)]))
    states, params = [], []
    for j in range(3):
        ps = [p.clone().requires_grad_() for p in start[j]]
        optimizer = make(ps)
        for k in range(done[j]):
            for p, gr in zip(ps, grads[j][k]):
                p.grad = gr.clone()
            optimizer.step()
        params.append([p.detach() for p in ps])
        states.append(optimizer.state_dict() if done[j] else {})
    stacked_params = [torch.stack([params[j][i] for j in range(3)]) for i in range(2)]
    per_trajectory = [stack_optimizer_state(update, states[j], params[j], 1)
                      for j in range(3)]
    state = {key: [torch.cat([per_trajectory[j][0][key][i] for j in range(3)]) for i in range(2)]
             for key in update.state_keys}
    steps = torch.tensor([float(per_trajectory[j][1]) for j in range(3)], dtype=torch.float64)
    for k in range(6):
        steps += 1
        update.update_(stacked_params, [torch.stack([grads[j][done[j] + k][i] for j in range(3)])
                                        for i in range(2)], state, steps)
    for j in range(3):
        for i in range(2):
            torch.testing.assert_close(stacked_params[i][j], reference[j][i], rtol=1e-14,
                                       atol=1e-15)


@pytest.mark.parametrize("make, message", [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), "without nesterov only"),
    (lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=1e-4), "weight_decay=0.0001"),
    (lambda p: torch.optim.Adam(p, amsgrad=True), "without amsgrad only; got amsgrad=True"),
    (lambda p: torch.optim.RMSprop(p), "reproduces torch.optim.SGD and torch.optim.Adam; got "
                                       "RMSprop"),
])
def test_unsupported_optimisers_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        stacked_optimizer(make([torch.zeros(1, requires_grad=True)]))


def test_optimizer_state_round_trip():
    update = Adam(lr=0.1)
    params = [torch.zeros(2, dtype=torch.float64)]
    saved = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, dtype=torch.float64),
                           "exp_avg_sq": torch.full((2,), 2.0, dtype=torch.float64)}},
             "param_groups": [{"lr": 0.1, "params": [0]}]}
    stacked, steps = stack_optimizer_state(update, saved, params, width=4)
    assert steps == 3 and stacked["exp_avg"][0].shape == (4, 2)
    back = optimizer_state_dict(update, stacked, 2, steps, saved["param_groups"],
                                torch.tensor(0.0))
    assert flatten(back).keys() == flatten(saved).keys()
    assert all(torch.equal(flatten(back)[k], flatten(saved)[k]) for k in flatten(saved))
    assert MomentumSGD(lr=0.1).state_keys == ()  # plain SGD keeps no state


# ------------------------------------------------------------------------------------------------
# Engine choice, memory sizing, evaluation side by side, a real ResNet-18
# ------------------------------------------------------------------------------------------------

def test_batched_engine_refuses_maps_it_cannot_run_with_the_reason(data, tmp_path):
    x, y, *_, schedule = data
    model = MLP(2, 8, 3, 1).double()
    nesterov = optimizer_maps(model, F.mse_loss, x, y, schedule,
                              lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))
    config = TrajectoryConfig(optimizer="momentum", order="backward", steps=12)
    with pytest.raises(ValueError, match="engine='batched' cannot run model='mlp', "
                                         "optimizer='momentum', update='sgd': .*nesterov"):
        choose_engine(Runtime(engine="batched", results_dir=tmp_path), torch.device("cpu"),
                      config, nesterov, model)
    auto = choose_engine(Runtime(engine="auto", results_dir=tmp_path), torch.device("cpu"),
                         config, nesterov, model)
    assert auto == ("sequential", 0)


def test_auto_on_cpu_stays_sequential_for_every_family(tmp_path):
    cpu = Runtime(device="cpu", results_dir=tmp_path, progress=False)
    for changes in ({}, {"optimizer": "adam"}, {"optimizer": "momentum"}):
        config = TrajectoryConfig(dataset="synthetic-x2", depth=1, width=8, steps=6,
                                  order="backward", **changes)
        assert prepare(config, cpu).engine == "sequential"


@pytest.mark.parametrize("changes", [
    dict(),                                                        # SGD on an MLP
    dict(optimizer="momentum"), dict(optimizer="adam"),
    dict(update="small", micro_batches=2, batch_size=4),
    dict(update="average", micro_batches=2, batch_size=4),
    dict(update="regularised", micro_batches=2, batch_size=4, reg_lambda=0.1),
    dict(dataset="cifar10", fake_data=True, model="resnet18", batch_size=2),   # BatchNorm
    dict(dataset="cifar10", fake_data=True, model="vgg19", batch_size=2),
], ids=["sgd", "momentum", "adam", "small", "average", "regularised", "resnet18", "vgg19"])
def test_auto_takes_the_batched_engine_on_cuda_for_every_family(changes, tmp_path, monkeypatch):
    """`choose_engine` as it decides on a GPU (the device is only named: the free memory is
    given), for every family a page runs; the width is a quarter of 1 GiB over the trajectory."""
    import iteration_order.trajectory as trajectory
    monkeypatch.setattr(trajectory, "_free_bytes", lambda device: 2 ** 30)
    mlp = {"depth": 1, "width": 8} if changes.get("model", "mlp") == "mlp" else {}
    config = TrajectoryConfig(**{"dataset": "synthetic-x2", **mlp, "steps": 6,
                                 "order": "backward", **changes})
    run = prepare(config, Runtime(device="cpu", results_dir=tmp_path, progress=False))
    engine, width = choose_engine(Runtime(engine="auto", results_dir=tmp_path),
                                  torch.device("cuda"), config, run.maps, run.model)
    expected = max(2, min(256, 2 ** 28 // trajectory_bytes(run.model, run.maps,
                                                           run.maps.inputs[:1])))
    assert (engine, width) == ("batched", expected)
    forward = choose_engine(Runtime(engine="auto", results_dir=tmp_path), torch.device("cuda"),
                            config.replace(order="forward"), run.maps, run.model)
    assert forward == ("sequential", 0)


def test_gpu_evaluation_chunks_fill_about_a_gibibyte():
    assert gpu_chunk(4 * 1000) == 65536          # a small MLP: capped
    assert gpu_chunk(2 ** 20) == 1024            # 1 MiB per example: 1 GiB / 1 MiB
    assert gpu_chunk(2 ** 24) == 256             # 16 MiB per example: at least 256


def test_largest_activation_is_the_scale_of_an_evaluation():
    model = MLP(2, 8, 3, 1).double()
    x = torch.zeros(1, 3, dtype=torch.float64)
    assert activation_bytes_per_example(model, x, largest=True) == 8 * 8  # one hidden layer


def test_memory_per_trajectory_counts_optimizer_state_and_activations(data):
    x, y, *_, schedule = data
    model = MLP(2, 8, 3, 1).double()
    sgd = sgd_maps(model, F.mse_loss, x, y, schedule, 0.1)
    adam = optimizer_maps(model, F.mse_loss, x, y, schedule, lambda p: torch.optim.Adam(p))
    momentum = optimizer_maps(model, F.mse_loss, x, y, schedule,
                              lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    # leaf outputs of one example: Flatten 3, Linear 8, ReLU 8, Linear 8, ReLU 8, Linear 1
    assert activation_bytes_per_example(model, x[:1]) == (3 + 8 * 4 + 1) * 8
    params = sum(p.numel() for p in model.parameters()) * 8
    activations = 2 * 4 * (3 + 8 * 4 + 1) * 8  # twice the outputs, 4 examples per batch
    assert trajectory_bytes(model, sgd, x[:1]) == 3 * params + activations
    assert trajectory_bytes(model, momentum, x[:1]) == 4 * params + activations
    assert trajectory_bytes(model, adam, x[:1]) == 7 * params + activations  # 2 moments, 2 temps


def test_evaluating_side_by_side_equals_one_by_one(tmp_path):
    config = TrajectoryConfig(dataset="fashionmnist", fake_data=True, depth=1, width=16,
                              batch_size=4, steps=3, order="backward")
    run = prepare(config, Runtime(device="cpu", results_dir=tmp_path, progress=False))
    model = run.model.double()
    data = run.data.__class__(**{**run.data.__dict__, "x_train": run.data.x_train.double(),
                                 "x_test": run.data.x_test.double()})
    evaluator = Evaluator(model, data, 0, 0, 0, chunk=100)  # several chunks per split
    states = [initial_state(model)]
    for i in range(2):
        states.append(sgd_maps(model, F.cross_entropy, data.x_train, data.y_train,
                               run.schedule, 0.1)[i](states[-1]))
    one_by_one = [evaluator(s) for s in states]
    side_by_side = evaluator.many(states)
    for a, b in zip(one_by_one, side_by_side):
        assert a.keys() == b.keys()
        assert a["train_acc"] == b["train_acc"] and a["test_acc"] == b["test_acc"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-10)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-10)
    # and one evaluation is the mean loss over the whole set, in one pass
    whole = F.cross_entropy(model(data.x_test), data.y_test).item()
    assert one_by_one[0]["test_loss"] == pytest.approx(whole, rel=1e-12)
    assert evaluator.many([]) == []


def test_bad_chunk_is_refused(tmp_path):
    run = prepare(TrajectoryConfig(steps=2), Runtime(device="cpu", results_dir=tmp_path))
    with pytest.raises(ValueError, match="chunk must be an integer >= 0 .* got -1"):
        Evaluator(run.model, run.data, 0, 0, 0, chunk=-1)


def test_batched_run_gives_the_sequential_curves_for_adam(tmp_path):
    config = TrajectoryConfig(dataset="synthetic-x2", depth=2, width=16, optimizer="adam",
                              lr=0.001, steps=12, order="backward", record="every:3")
    a = run_trajectory(config, Runtime(device="cpu", engine="sequential", results_dir=tmp_path / "a",
                                       progress=False))
    b = run_trajectory(config, Runtime(device="cpu", engine="batched", group_size=3,
                                       results_dir=tmp_path / "b", progress=False))
    assert (a["runtime"]["engine"], b["runtime"]["engine"]) == ("sequential", "batched")
    assert a["recorded_steps"] == b["recorded_steps"]
    for key in ("train_loss", "test_loss", "displacement"):  # float32: rounding only
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_resnet18_batched_equals_sequential():
    """The real ResNet-18 (BatchNorm everywhere), float64, 3 steps of batch 2: 1e-10 (measured
    difference 3e-15). On 16×16 images, which the network takes (its last stage sees 2×2 maps),
    so that the float64 check takes seconds rather than minutes; at h = 0.001, because at 0.05
    these three steps move the weights by hundreds and any rounding difference grows chaotically
    (1e-6 relative at step 3 between two summation orders, whatever the engines)."""
    torch.manual_seed(0)
    model = build_model("resnet18", (3, 16, 16), 10, seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=g)
    maps = sgd_maps(model, F.cross_entropy, x, y, torch.arange(6).view(3, 2), 0.001)
    state0 = initial_state(model)
    a = dict(iterates(maps, state0, "backward"))
    b = dict(iterates(maps, state0, "backward", group_size=3))
    for n in a:
        assert_same_state(a[n], b[n])
