"""How far a page's networks trained (issue 18: a stand-in must really train, and its page says
so): the tail median of the train loss per order, over the steps every order recorded, and that
median against the loss of a uniform guess on a classification set."""
import math

import pytest

from iteration_order.book.orders import OrdersExperiment, _tail_level


def _result(steps, recorded, losses, diverged=None):
    return {"config": {"steps": steps}, "recorded_steps": recorded, "train_loss": losses,
            "diverged_at": diverged}


def _experiment(dataset, seeds=(0, 1)):
    return OrdersExperiment(dataset=dataset, model="mlp", lr=0.01, batch_size=1, steps=8,
                            seeds=list(seeds), depth=1, width=4)


def test_the_tail_level_uses_the_steps_every_order_recorded():
    # forward records every step, backward every other one: only steps 6 and 8 are shared in the
    # last quarter (steps >= 6), and forward's value at step 7 must not count
    forward = _result(8, [0, 1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9, 9, 9, 1.0, 100.0, 3.0])
    backward = _result(8, [0, 2, 4, 6, 8], [9, 9, 9, 2.0, 4.0])
    results = {(0, "forward"): forward, (0, "backward"): backward,
               (1, "forward"): forward, (1, "backward"): backward}
    numbers = _tail_level(_experiment("fashionmnist"), results, "forward")
    assert numbers["forward_tail_loss_min"] == numbers["forward_tail_loss_max"] == 2.0
    assert numbers["chance_loss"] == pytest.approx(math.log(10))
    assert numbers["forward_tail_loss_chance_max"] == pytest.approx(2.0 / math.log(10))
    backward_numbers = _tail_level(_experiment("fashionmnist"), results, "backward")
    assert backward_numbers["backward_tail_loss_min"] == 3.0


def test_a_regression_has_no_chance_level_and_a_diverged_seed_is_left_out():
    ok = _result(8, [0, 6, 8], [9, 1.0, 1.0])
    gone = _result(8, [0, 6], [9, float("nan")], diverged=6)
    results = {(0, "forward"): ok, (0, "backward"): ok,
               (1, "forward"): ok, (1, "backward"): gone}
    numbers = _tail_level(_experiment("synthetic-x2"), results, "forward")
    assert "chance_loss" not in numbers
    assert numbers["forward_tail_loss_min"] == numbers["forward_tail_loss_max"] == 1.0
