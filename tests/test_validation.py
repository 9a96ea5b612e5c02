"""Every bad input we know of, through every entry point, gets a clear error.

`BAD_INPUTS` is the one list: (what is tried, a fragment its message must contain). The library
configs, the book's experiment configs, the registry (``experiments.yml``), the command line and
the templates' papermill parameters cell are all in it. A message must name the bad value and
what is allowed; the fragment checks both where it can.
"""
from __future__ import annotations

import contextlib
import functools
import io
import math
import tempfile
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from iteration_order.book import studies
from iteration_order.book.studies import check_registry
from papermill.exceptions import PapermillExecutionError

from iteration_order import Reset, Runtime, SwitchAt, TrajectoryConfig, as_order, iterates
from iteration_order.book import cli as book_cli, registry, runner
from iteration_order.book.lie_bracket import LieStudy
from iteration_order.book.order_average import OrderAverageExperiment
from iteration_order.book.orders import OrdersExperiment
from iteration_order.book.sharpness import SharpnessExperiment
from iteration_order.book.stationary import StationaryStudy
from iteration_order.book.summary import SummaryConfig
from iteration_order.seeding import set_threads, stream_seed
from iteration_order.sharpness import Probe

# ------------------------------------------------------------------------------------------------
# Helpers: each returns nothing or raises the error under test
# ------------------------------------------------------------------------------------------------

SMALL = dict(dataset="synthetic-x2", depth=1, width=4, lr=0.05, batch_size=4, steps=10)


def config(**changes):
    return TrajectoryConfig(**{**SMALL, **changes})


def orders_experiment(**changes):
    return OrdersExperiment(**{**SMALL, "model": "mlp", "seeds": [0, 1], **changes})


def lie_bracket(**changes):
    return LieStudy(**{"trajectory": {**SMALL, "record": "at:5,10"}, "lr_factors": [0.1, 1.0],
                       "sweep_at": [5], "fit_points": 2, **changes})


def order_average(**changes):
    return OrderAverageExperiment(**{"dataset": "synthetic-x2", "lr": 0.01, "batch_size": 12,
                                     "splits": [2, 3], "lambdas": [0.5], "steps": 4,
                                     "seeds": [0], "depth": 1, "width": 4, "init": "torch",
                                     **changes})


def sharpness(**changes):
    return SharpnessExperiment(**{"trajectory": config(), "seeds": [0], "probe": Probe(every=5),
                                  **changes})


STATIONARY = dict(chains=20, steps=40, early_step=5, grid_points=5, trace_chains=2,
                  wrong_scale=1.2, alpha=0.05, seed=0, quadratic_h=0.1, quadratic_noise=1.0,
                  quadratic_theta0=3.0, regression_points=40, regression_dim=2,
                  regression_batch=4, regression_h=0.1, network_points=16, network_span=2.0,
                  network_teacher=(1.0, 0.5, 1.0), network_noise=0.05, network_batch=4,
                  network_h=0.6, network_theta0=(2.0, 0.0, 0.5))


def stationary(**changes):
    return StationaryStudy(**{**STATIONARY, **changes})


def summary(**changes):
    return SummaryConfig(**{"pages": ["fig04-x2"], "profile": "smoke", **changes})


def _registry_file(text: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="registry-"))
    (folder / "experiments.yml").write_text(text)
    return folder / "experiments.yml"


def load_registry(text: str):
    registry.load_pages(_registry_file(text))


PAGE = ("pages:\n  p:\n    template: orders\n    title: t\n    claim: c\n"
        "    profiles:\n      smoke: {%s}\n      cpu: {}\n      paper: {}\n")
INJECTION = "steps; import os; os.system('touch marker'); y"


def registry_text_problem(text: str):
    """check_registry on a registry file holding ``text``: its problems, raised so that the test
    reads them like any other error."""
    problems = studies.check_registry(_registry_file(text))
    if problems:
        raise ValueError("\n".join(problems))


def registry_problem(smoke: str):
    """The problems of a one-page registry whose smoke profile holds ``smoke``."""
    registry_text_problem(PAGE % smoke)


def cli(*args: str, registry_text: str | None = None):
    """``python -m iteration_order.book ARGS`` (on a registry of ours when given): a non-zero exit
    is raised with everything it printed."""
    out = io.StringIO()
    path = _registry_file(registry_text) if registry_text is not None else registry.REGISTRY
    with mock.patch.object(registry, "REGISTRY", path), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(out):
        try:
            book_cli.main(list(args))
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise SystemExit(f"{out.getvalue()}{exit_.code}") from None


def executed_at_cpu_then_run_at_smoke(run_pages: bool):
    """book/theory.ipynb executed at cpu; then a smoke run of it, without --force."""
    book = Path(tempfile.mkdtemp(prefix="book-"))
    nb = nbformat.v4.new_notebook()
    runner._decorate(nb, "theory", "cpu", registry.parameters("theory", "cpu"), 6.0, "2026-01-01")
    nbformat.write(nb, book / "theory.ipynb")
    with mock.patch.object(runner, "BOOK", book), mock.patch.object(runner, "LOGS", book):
        if run_pages:
            runner.run_pages("smoke", only=["theory"])
        else:
            runner.execute_page("theory", "smoke", jobs=1)


def truncated_template(name: str, folder: Path, extra: str | None = None) -> Path:
    """The template up to its parameter check (and ``extra`` code after it): what papermill runs
    of it before anything is imported or trained."""
    nb = nbformat.read(registry.ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    check = next(i for i, c in enumerate(nb.cells) if "_check_parameters(" in c.source)
    nb.cells = nb.cells[:check + 1]
    if extra:
        nb.cells.append(nbformat.v4.new_code_cell(extra))
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


@functools.lru_cache(maxsize=None)
def _papermill_cli_error() -> PapermillExecutionError:
    """One run of papermill's own command line on the orders template with four bad ``-p``
    (the check reports every problem at once, so one kernel serves the four entries)."""
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_cli

    folder = Path(tempfile.mkdtemp(prefix="papermill-"))
    source = truncated_template("orders", folder)
    result = CliRunner().invoke(papermill_cli, [
        str(source), str(folder / "out.ipynb"), "-p", "fake_data", "no", "-p", "orders",
        "backwards", "-p", "seeds", "5", "-p", "nosuch", "1", "-p", "lr", "True", "-p", "steps",
        "1.5", "--kernel", "python3", "--no-progress-bar"])
    assert isinstance(result.exception, PapermillExecutionError), result.output
    return result.exception


def papermill_run(fragment: str):
    """Raise papermill's error if it reports ``fragment`` (else the test sees no error)."""
    error = _papermill_cli_error()
    if fragment in str(error):
        raise error


def kernel_namespace(**values):
    """What the check cell sees: IPython's own names and the given parameters."""
    from iteration_order.book.registry import check_parameters
    namespace = {"In": [], "Out": {}, "get_ipython": None, "exit": None, "quit": None,
                 "open": open, "_": None, "__name__": "__main__",
                 **registry.template_defaults(registry.ROOT / "notebooks" / "orders.ipynb"),
                 **values}
    check_parameters(namespace, "orders")


# ------------------------------------------------------------------------------------------------
# The list
# ------------------------------------------------------------------------------------------------

def bad(attempt, message, id):
    return pytest.param(attempt, message, id=id)


BAD_INPUTS = [
    # -- TrajectoryConfig: exact types ----------------------------------------------------------
    bad(lambda: config(fake_data="no"), "fake_data must be True or False; got 'no'", "fake_data 'no'"),
    bad(lambda: config(fake_data=1), "fake_data must be True or False; got 1", "fake_data 1"),
    bad(lambda: config(lr=True), "lr must be a finite number > 0; got True", "lr True"),
    bad(lambda: config(lr="0.1"), "lr must be a finite number > 0; got '0.1'", "lr string"),
    bad(lambda: config(lr=0), "lr must be a finite number > 0; got 0", "lr 0"),
    bad(lambda: config(lr=-0.1), "lr must be a finite number > 0; got -0.1", "lr negative"),
    bad(lambda: config(lr=math.nan), "lr must be a finite number > 0; got nan", "lr nan"),
    bad(lambda: config(lr=math.inf), "lr must be a finite number > 0; got inf", "lr inf"),
    bad(lambda: config(seed=True), "seed must be an integer >= 0; got True", "seed True"),
    bad(lambda: config(seed=-1), "seed must be an integer >= 0; got -1", "seed negative"),
    bad(lambda: config(seed=1.0), "seed must be an integer >= 0; got 1.0", "seed float"),
    bad(lambda: config(steps=True), "steps must be an integer in 1..1000000; got True", "steps True"),
    bad(lambda: config(steps=0), "steps must be an integer in 1..1000000; got 0", "steps 0"),
    bad(lambda: config(steps=2.5), "steps must be an integer in 1..1000000; got 2.5", "steps float"),
    bad(lambda: config(batch_size=True), "batch_size must be an integer >= 1; got True",
        "batch_size True"),
    bad(lambda: config(depth=0), "depth must be an integer >= 1; got 0", "depth 0"),
    bad(lambda: config(width="32"), "width must be an integer >= 1; got '32'", "width string"),
    bad(lambda: config(eval_train_size=-1), "eval_train_size must be an integer >= 0; got -1",
        "eval_train_size negative"),
    bad(lambda: config(eval_test_size=True), "eval_test_size must be an integer >= 0; got True",
        "eval_test_size True"),
    bad(lambda: config(momentum="abc", optimizer="momentum"),
        "momentum must be a finite number in [0, 1); got 'abc'", "momentum string"),
    bad(lambda: config(momentum=1.0, optimizer="momentum"),
        "momentum must be a finite number in [0, 1); got 1.0", "momentum 1"),
    bad(lambda: config(momentum=-0.5, optimizer="momentum"),
        "momentum must be a finite number in [0, 1); got -0.5", "momentum negative"),
    bad(lambda: config(momentum=math.nan, optimizer="momentum"),
        "momentum must be a finite number in [0, 1); got nan", "momentum nan"),
    bad(lambda: config(dataset=5), "dataset must be a string; got 5", "dataset int"),
    bad(lambda: config(dataset="imagenet"), "unknown data set 'imagenet'; allowed: synthetic-x2",
        "dataset unknown"),
    bad(lambda: config(dataset="npz:"), "unknown data set 'npz:'; allowed:", "dataset npz empty"),
    bad(lambda: config(model="resnet34"), "unknown model 'resnet34'; allowed: mlp, resnet18",
        "model unknown"),
    bad(lambda: config(model=["mlp"]), "unknown model ['mlp']; allowed: mlp", "model list"),
    bad(lambda: config(init="glorot"), "unknown init 'glorot'; allowed: torch, he", "init unknown"),
    bad(lambda: config(optimizer="lbfgs"), "unknown optimizer 'lbfgs'; allowed: sgd, momentum, adam",
        "optimizer unknown"),
    bad(lambda: config(record=5), "record must be a string, one of 'every:K'", "record int"),
    bad(lambda: config(record_forward=["every:1"]), "record_forward must be a string",
        "record_forward list"),
    bad(lambda: config(record="every:0"), "bad record spec 'every:0'", "record every:0"),
    bad(lambda: config(update=5), "update must be a string; got 5", "update int"),
    bad(lambda: config(update="nosuch"), "unknown update 'nosuch'; allowed: sgd", "update unknown"),
    bad(lambda: config(micro_batches=True), "micro_batches must be an integer >= 1; got True",
        "micro_batches True"),
    bad(lambda: config(reg_lambda=-1.0), "reg_lambda must be a finite number >= 0; got -1.0",
        "reg_lambda negative"),
    bad(lambda: config(reg_lambda=math.nan), "reg_lambda must be a finite number >= 0; got nan",
        "reg_lambda nan"),
    bad(lambda: TrajectoryConfig.from_fields({"dataset": "synthetic-x2", "dept": 2}),
        "['dept'] are not TrajectoryConfig fields; allowed: dataset, fake_data", "unknown field"),
    bad(lambda: TrajectoryConfig.from_fields(5), "trajectory must be a mapping of TrajectoryConfig "
        "fields", "fields not a mapping"),
    # -- TrajectoryConfig: values that cannot matter ---------------------------------------------
    bad(lambda: config(fake_data=True), "fake_data=True has no effect on 'synthetic-x2'",
        "fake data on a synthetic set"),
    bad(lambda: config(dataset="cifar10", fake_data=True, model="resnet18", depth=1, width=300),
        "depth=1 is used by model='mlp' only and model='resnet18' ignores it: leave depth at its "
        "default 3", "depth on a ResNet"),
    bad(lambda: config(dataset="cifar10", fake_data=True, model="vgg19", depth=3, width=32),
        "width=32 is used by model='mlp' only", "width on a VGG"),
    bad(lambda: TrajectoryConfig(dataset="cifar10", fake_data=True, model="resnet18", init="he"),
        "init='he' is used by model='mlp' only and model='resnet18' ignores it: leave init at its "
        "default 'torch'", "init on a ResNet"),
    bad(lambda: config(momentum=0.5), "momentum=0.5 is used by optimizer='momentum' only; got "
        "optimizer='sgd'", "momentum without momentum optimiser"),
    bad(lambda: config(momentum=0.5, optimizer="adam"), "momentum=0.5 is used by "
        "optimizer='momentum' only; got optimizer='adam'", "momentum with adam"),
    bad(lambda: config(order="switch:99999"), "order 'switch:99999' restarts every step of a run "
        "of 10 steps as 'forward' does", "switch after the end"),
    bad(lambda: config(order="switch:9"), "use 'forward'", "switch at the last step but one"),
    bad(lambda: config(order="switch:0"), "order 'switch:0' restarts every step of a run of 10 "
        "steps as 'backward' does", "switch at 0"),
    bad(lambda: config(order="reset:at=99999"), "use 'backward'", "reset after the end"),
    bad(lambda: config(order="reset:at=10"), "use 'backward'", "reset at the last step"),
    bad(lambda: config(order="reset:at=5,99999"), "reset steps [99999] are not before the last "
        "step 10, where a reset changes nothing; reset steps must lie in 1..9", "one late reset"),
    bad(lambda: config(order="reset:every=1"), "order 'reset:every=1' restarts every step of a "
        "run of 10 steps as 'forward' does", "reset every step"),
    bad(lambda: config(order="reset:every=10"), "use 'backward'", "reset period = steps"),
    bad(lambda: config(order="reset:every=99999"), "use 'backward'", "reset period > steps"),
    bad(lambda: config(order="sideways"), "unknown order 'sideways'. Allowed forms: 'forward'",
        "order unknown"),
    bad(lambda: config(order="switch:1.5"), "bad order 'switch:1.5'", "switch float"),
    bad(lambda: config(order="reset:at="), "bad order 'reset:at='", "reset at nothing"),
    bad(lambda: config(order=5), "order must be an Order or a string", "order int"),
    # -- Runtime -----------------------------------------------------------------------------------
    bad(lambda: Runtime(group_size=True), "group_size (0 = fit to GPU memory) must be an integer "
        ">= 0; got True", "group_size True"),
    bad(lambda: Runtime(group_size=-1), "must be an integer >= 0; got -1", "group_size negative"),
    bad(lambda: Runtime(threads=1.5), "threads (0 = all cores) must be an integer >= 0; got 1.5",
        "threads float"),
    bad(lambda: Runtime(engine="fast"), "unknown engine 'fast'; allowed: auto, sequential, batched",
        "engine unknown"),
    bad(lambda: Runtime(device="gpu"), "device must be one of auto, cpu, cuda, cuda:N; got 'gpu'",
        "device unknown"),
    bad(lambda: Runtime(device=0), "device must be one of auto, cpu, cuda, cuda:N; got 0", "device int"),
    bad(lambda: Runtime(download="no"), "download must be True or False; got 'no'",
        "download string"),
    bad(lambda: Runtime(progress=1), "progress must be True or False; got 1", "progress int"),
    bad(lambda: Runtime(data_root=5), "data_root must be a path (a string or a pathlib.Path) or "
        "None; got 5", "data_root int"),
    bad(lambda: Runtime(results_dir=None), "results_dir must be a path", "results_dir None"),
    # -- orders and the engine ---------------------------------------------------------------------
    bad(lambda: Reset(every=True), "Reset(every=...): the period must be an integer >= 1; got True",
        "Reset every True"),
    bad(lambda: Reset(every=1.5), "the period must be an integer >= 1; got 1.5", "Reset every float"),
    bad(lambda: Reset(every=0), "the period must be an integer >= 1; got 0", "Reset every 0"),
    bad(lambda: SwitchAt(True), "SwitchAt(step): the switch step must be an integer >= 0; got True",
        "SwitchAt True"),
    bad(lambda: SwitchAt(2.0), "the switch step must be an integer >= 0; got 2.0", "SwitchAt float"),
    bad(lambda: SwitchAt(-3), "the switch step must be an integer >= 0; got -3", "SwitchAt negative"),
    bad(lambda: Reset(at=[True]), "Reset(at=...)[0] must be an integer >= 1; got True",
        "Reset at [True]"),
    bad(lambda: Reset(at=5), "Reset(at=...) must be a list such as [1000]; got 5", "Reset at int"),
    bad(lambda: Reset(at="1000"), "Reset(at=...) must be a list such as [1000]; got the single "
        "string '1000'", "Reset at string"),
    bad(lambda: Reset(), "Reset needs exactly one of every=k or at=[steps]", "Reset nothing"),
    bad(lambda: as_order(None), "order must be an Order or a string", "order None"),
    bad(lambda: iterates([abs] * 3, 0, "forward", at=5), "at must be a list of steps in 1..3 such "
        "as [1, 3]; got 5", "iterates at int"),
    bad(lambda: iterates([abs] * 3, 0, "forward", at=[True]), "requested steps [True] are not "
        "integers or are outside 1..3", "iterates at [True]"),
    bad(lambda: iterates([abs] * 3, 0, "forward", group_size=True), "group_size (0 = no grouping) "
        "must be an integer >= 0; got True", "iterates group_size True"),
    bad(lambda: stream_seed(True, "init"), "seed must be an integer >= 0; got True",
        "stream seed True"),
    bad(lambda: set_threads(True), "threads (0 = all cores) must be an integer >= 0; got True",
        "set_threads True"),
    # -- the figure pages' experiment ------------------------------------------------------------
    bad(lambda: orders_experiment(orders="backwards"), "orders must be a list such as ['forward', "
        "'backward']; got the single string 'backwards'", "orders single string"),
    bad(lambda: orders_experiment(seeds=5), "seeds must be a list such as [0, 1]; got 5",
        "seeds int"),
    bad(lambda: orders_experiment(seeds="01"), "seeds must be a list such as [0, 1]; got the single "
        "string '01'", "seeds string"),
    bad(lambda: orders_experiment(seeds=[True]), "seed must be an integer >= 0; got True",
        "seeds [True]"),
    bad(lambda: orders_experiment(seeds=[0, 0]), "seeds must not repeat a value; got [0, 0]",
        "seeds repeated"),
    bad(lambda: orders_experiment(seeds=[]), "an experiment needs at least one seed", "no seeds"),
    bad(lambda: orders_experiment(orders=["forward", "Forward"]), "orders must not repeat a value",
        "orders repeated"),
    bad(lambda: orders_experiment(orders=["forward"]), "compares at least two orders",
        "one order"),
    bad(lambda: orders_experiment(orders=["forward", "switch:99999"]), "use 'forward'",
        "page order beyond its steps"),
    bad(lambda: orders_experiment(tail=0), "tail must be a finite number in (0, 1]; got 0", "tail 0"),
    bad(lambda: orders_experiment(tail=True), "tail must be a finite number in (0, 1]; got True",
        "tail True"),
    bad(lambda: orders_experiment(fake_data="no"), "fake_data must be True or False; got 'no'",
        "page fake_data string"),
    bad(lambda: OrdersExperiment.from_parameters({**SMALL, "model": "mlp", "seeds": [0],
                                                  "stepz": 3}),
        "not parameters of an orders page: ['stepz']", "page unknown parameter"),
    # -- the studies' configs ------------------------------------------------------------------
    bad(lambda: lie_bracket(lr_factors="0.1"), "lr_factors must be a list such as [0.01, 0.1, 1.0]; "
        "got the single string '0.1'", "lie lr_factors string"),
    bad(lambda: lie_bracket(lr_factors=[True, 1.0]), "lr_factors[0] must be a finite number > 0; got "
        "True", "lie lr_factors bool"),
    bad(lambda: lie_bracket(lr_factors=[0.0, 1.0]), "lr_factors[0] must be a finite number > 0; got "
        "0.0", "lie lr_factors 0"),
    bad(lambda: lie_bracket(sweep_at=5), "sweep_at must be a list such as [10, 10]; got 5",
        "lie sweep_at int"),
    bad(lambda: lie_bracket(sweep_at=[11]), "sweep_at[0] must be an integer in 1..10; got 11",
        "lie sweep_at beyond steps"),
    bad(lambda: lie_bracket(fit_points=True), "fit_points (at most the 2 distinct lr_factors) must be "
        "an integer in 2..2; got True", "lie fit_points True"),
    bad(lambda: lie_bracket(activation="sigmoid"), "unknown activation 'sigmoid'; allowed: relu, tanh",
        "lie activation"),
    bad(lambda: lie_bracket(dtype="float16"), "unknown dtype 'float16'; allowed: float32, float64",
        "lie dtype"),
    bad(lambda: lie_bracket(trajectory={**SMALL, "dept": 1}), "['dept'] are not TrajectoryConfig "
        "fields", "lie trajectory typo"),
    bad(lambda: lie_bracket(trajectory=5), "trajectory must be a TrajectoryConfig or a dict of its "
        "fields; got 5", "lie trajectory int"),
    bad(lambda: order_average(splits=[1]), "splits[0] must be an integer >= 2; got 1",
        "appendix D split 1"),
    bad(lambda: order_average(splits="23"), "splits must be a list such as [2, 3]; got the single "
        "string '23'", "appendix D splits string"),
    bad(lambda: order_average(lambdas=[-1.0]), "lambdas[0] must be a finite number > 0; got -1.0",
        "appendix D lambda negative"),
    bad(lambda: order_average(lambdas=[True]), "lambdas[0] must be a finite number > 0; got True",
        "appendix D lambda True"),
    bad(lambda: order_average(natural_lambda="yes"), "natural_lambda must be True or False; got "
        "'yes'", "appendix D natural_lambda string"),
    bad(lambda: order_average(literal_large=1), "literal_large must be True or False; got 1",
        "appendix D literal_large int"),
    bad(lambda: order_average(batch_size=True), "batch_size must be an integer >= 1; got True",
        "appendix D batch_size True"),
    bad(lambda: order_average(seeds=0), "seeds must be a list such as [0]; got 0",
        "appendix D seeds int"),
    bad(lambda: order_average(fake_data=True), "fake_data=True has no effect on 'synthetic-x2'",
        "appendix D fake data on synthetic"),
    bad(lambda: sharpness(trajectory=SMALL), "trajectory must be a TrajectoryConfig "
        "(TrajectoryConfig.from_fields builds one from a dict)", "sharpness trajectory dict"),
    bad(lambda: sharpness(probe={"every": 5}), "probe must be a Probe; got {'every': 5}",
        "sharpness probe dict"),
    bad(lambda: sharpness(orders="backward"), "orders must be a list such as ['forward', "
        "'backward']; got the single string 'backward'", "sharpness orders string"),
    bad(lambda: sharpness(seeds=0), "seeds must be a list such as [0, 1]; got 0",
        "sharpness seeds int"),
    bad(lambda: sharpness(skip_intervals=True), "skip_intervals must be an integer >= 0; got True",
        "sharpness skip_intervals True"),
    bad(lambda: sharpness(tail=1.5), "tail must be a finite number in (0, 1]; got 1.5",
        "sharpness tail"),
    bad(lambda: stationary(chains=True), "chains must be an integer >= 20; got True",
        "stationary chains True"),
    bad(lambda: stationary(alpha=True), "alpha must be a finite number in (0, 1); got True",
        "stationary alpha True"),
    bad(lambda: stationary(network_teacher="abc"), "network_teacher must be a list such as [1.0, "
        "0.5, 1.0]; got the single string 'abc'", "stationary teacher string"),
    bad(lambda: stationary(network_teacher=[1.0, 2.0, "x"]), "network_teacher[2] must be a finite "
        "number; got 'x'", "stationary teacher item"),
    bad(lambda: stationary(quadratic_theta0="3"), "quadratic_theta0 must be a finite number; got "
        "'3'", "stationary theta0 string"),
    bad(lambda: stationary(network_noise=-1.0), "network_noise must be a finite number >= 0; got "
        "-1.0", "stationary noise negative"),
    bad(lambda: stationary(wrong_scale=math.nan), "wrong_scale must be a finite number > 0; got nan",
        "stationary wrong_scale nan"),
    bad(lambda: stationary(early_step=20), "early_step (a step before convergence: below steps // "
        "2 = 20) must be an integer in 1..19; got 20", "stationary early_step"),
    bad(lambda: summary(pages="fig04-x2"), "pages must be a list such as ['fig04-x2', "
        "'fig07-fashionmnist']; got the single string 'fig04-x2'", "summary pages string"),
    bad(lambda: summary(profile="gpu"), "unknown profile 'gpu'; allowed: smoke, quick, cpu, paper",
        "summary profile"),
    bad(lambda: summary(level=True), "level must be a finite number in (0, 1); got True",
        "summary level True"),
    bad(lambda: summary(train_missing="yes"), "train_missing must be True or False; got 'yes'",
        "summary train_missing string"),
    # -- the registry ------------------------------------------------------------------------------
    bad(lambda: load_registry("pages:\n  p: {template: orders\n"), "is not valid YAML",
        "registry syntax error"),
    bad(lambda: load_registry(""), "the file is empty; it must hold a 'pages:' mapping",
        "registry empty"),
    bad(lambda: load_registry("title: a book\n"), "no 'pages:' mapping at the top level (found "
        "['title'])", "registry without pages"),
    bad(lambda: load_registry("pages: [fig04]\n"), "'pages' must be a mapping of page names to "
        "entries; got ['fig04']", "registry pages list"),
    bad(lambda: load_registry("pages:\n  p: orders\n"), "page 'p' must be a mapping (template, "
        "profiles, ...); got 'orders'", "registry page string"),
    bad(lambda: load_registry("pages:\n  p:\n    template: orders\n    profiles:\n      smoke:\n"),
        "page 'p', profile 'smoke': parameters must be a mapping (write {} for none); got None",
        "registry profile null"),
    bad(lambda: registry_problem("stepz: 3"), "p [smoke]: 'stepz' is not a parameter of the "
        "template; it declares base_channels, batch_size, data_root, dataset", "registry typo key"),
    bad(lambda: registry_problem(f'"{INJECTION}": 1'), "p [smoke]: a parameter name must be a "
        "Python identifier (letters, digits and _, not a keyword); got \"steps; import os;",
        "registry injection key"),
    bad(lambda: registry_problem("class: 1"), "a parameter name must be a Python identifier",
        "registry keyword key"),
    bad(lambda: registry_problem("fake_data: 'no'"), "p [smoke]: fake_data must be True or False; "
        "got 'no'", "registry fake_data string"),
    bad(lambda: registry_problem("orders: backwards"), "p [smoke]: orders must be a list such as "
        "['forward', 'backward']; got the single string 'backwards'", "registry orders string"),
    bad(lambda: registry_problem("seeds: 5"), "p [smoke]: seeds must be a list such as [0, 1]; got 5",
        "registry seeds int"),
    bad(lambda: registry_problem("steps: 10, orders: [forward, 'switch:99999']"), "p [smoke]: order "
        "'switch:99999' restarts every step of a run of 10 steps as 'forward' does",
        "registry switch beyond steps"),
    bad(lambda: registry_problem("model: resnet18, dataset: cifar10, fake_data: true, "
                                 "momentum: 0.5"),
        "'momentum' is not a parameter of the template", "registry momentum undeclared"),
    bad(lambda: registry_text_problem(PAGE.replace("cpu: {}", "gpu: {}") % ""),
        "p: unknown profile(s) ['gpu']; profiles are smoke, quick, cpu, paper", "registry unknown profile"),
    bad(lambda: registry_text_problem(PAGE.replace("template: orders", "template: nope") % ""),
        "p: template nope.ipynb does not exist", "registry unknown template"),
    # -- the command line --------------------------------------------------------------------------
    bad(lambda: cli("check", registry_text="pages:\n  p: {template: orders\n"),
        "is not valid YAML", "book check on a syntax error"),
    bad(lambda: cli("list", registry_text=""), "the file is empty", "book list on an empty file"),
    bad(lambda: cli("run", "--profile", "smoke", registry_text=PAGE % "stepz: 3"),
        "experiments.yml has problems (python -m iteration_order.book check); nothing was run:\n"
        "p [smoke]: 'stepz' is not a parameter", "book run with a typo key"),
    bad(lambda: cli("check", registry_text=PAGE % "stepz: 3"), "'stepz' is not a parameter",
        "book check with a typo key"),
    bad(lambda: executed_at_cpu_then_run_at_smoke(run_pages=False), "book/theory.ipynb was "
        "executed at profile 'cpu'; running it at profile 'smoke' would replace it. To replace it, add FORCE=1",
        "execute_page over another profile"),
    bad(lambda: executed_at_cpu_then_run_at_smoke(run_pages=True), "nothing was run:\n"
        "book/theory.ipynb was executed at profile 'cpu'", "run_pages over another profile"),
    # -- the templates' parameters cell, in-process and through papermill's own -p ---------------
    bad(lambda: kernel_namespace(fake_data="no"), "fake_data must be True or False; got 'no'",
        "check cell fake_data string"),
    bad(lambda: kernel_namespace(orders="backwards"), "orders must be a list such as ['forward', "
        "'backward']; got the single string 'backwards'", "check cell orders string"),
    bad(lambda: kernel_namespace(seeds=5), "seeds must be a list such as [0, 1]; got 5",
        "check cell seeds int"),
    bad(lambda: kernel_namespace(seeds=[0, True]), "seeds[1] must be an integer; got True",
        "check cell seeds item"),
    bad(lambda: kernel_namespace(nosuch=1), "'nosuch' is not a parameter of the template",
        "check cell unknown name"),
    bad(lambda: kernel_namespace(steps=1.5), "steps must be an integer; got 1.5",
        "check cell steps float"),
    bad(lambda: kernel_namespace(lr="0.1"), "lr must be a number; got '0.1'", "check cell lr string"),
    bad(lambda: kernel_namespace(dataset=None), "dataset must be a string; got None",
        "check cell dataset None"),
    bad(lambda: papermill_run("fake_data must be True or False; got 'no'"),
        "fake_data must be True or False; got 'no'", "papermill -p fake_data no"),
    bad(lambda: papermill_run("orders must be a list such as ['forward', 'backward']; got the "
                              "single string 'backwards'"),
        "orders must be a list such as ['forward', 'backward']; got the single string "
        "'backwards'", "papermill -p orders backwards"),
    bad(lambda: papermill_run("seeds must be a list such as [0, 1]; got 5"),
        "seeds must be a list such as [0, 1]; got 5", "papermill -p seeds 5"),
    bad(lambda: papermill_run("'nosuch' is not a parameter of the template"),
        "'nosuch' is not a parameter of the template", "papermill -p nosuch 1"),
    bad(lambda: papermill_run("lr must be a number; got True"), "lr must be a number; got True",
        "papermill -p lr True"),
    bad(lambda: papermill_run("steps must be an integer; got 1.5"),
        "steps must be an integer; got 1.5", "papermill -p steps 1.5"),
]


@pytest.mark.parametrize("attempt, message", BAD_INPUTS)
def test_every_bad_input_gets_a_clear_error(attempt, message):
    """The error is a ValueError (a SystemExit from the command line, papermill's error from a
    kernel) whose text names the value and what is allowed."""
    with pytest.raises((ValueError, SystemExit, PapermillExecutionError)) as raised:
        attempt()
    assert message in str(raised.value)


def test_the_list_covers_every_entry_point():
    ids = [p.id for p in BAD_INPUTS]
    assert len(ids) == len(set(ids)) and len(ids) >= 150
    for entry in ("papermill -p fake_data no", "papermill -p orders backwards",
                  "papermill -p seeds 5", "papermill -p nosuch 1", "registry injection key",
                  "book run with a typo key", "registry syntax error", "registry empty",
                  "registry without pages", "execute_page over another profile"):
        assert entry in ids


# ------------------------------------------------------------------------------------------------
# Good inputs stay accepted
# ------------------------------------------------------------------------------------------------

def test_the_engine_still_accepts_orders_a_run_refuses():
    """The equalities the order tests rely on: only a run's config refuses them."""
    maps = [lambda x, c=c: 0.5 * x + c for c in range(6)]
    forward, backward = dict(iterates(maps, 1.0, "forward")), dict(iterates(maps, 1.0, "backward"))
    assert dict(iterates(maps, 1.0, SwitchAt(6))) == forward
    assert dict(iterates(maps, 1.0, SwitchAt(0))) == backward
    assert dict(iterates(maps, 1.0, Reset(every=1))) == forward
    assert dict(iterates(maps, 1.0, Reset(at=[99]))) == backward


def test_orders_that_matter_are_accepted_and_keep_their_names():
    assert config(order="switch:8").order == "switch:8"   # forward to 8, then 9 and 10 backward
    assert config(order="reset:every=9").order == "reset:every=9"
    assert config(order="reset:at=1,9").order == "reset:at=1,9"
    assert config(order=" Backward ").order == "backward"


def test_mlp_fields_reach_the_mlp_only():
    resnet = orders_experiment(dataset="cifar10", fake_data=True, model="resnet18", depth=2,
                               width=32, init="he")
    assert {(c.depth, c.width, c.init) for c in resnet.configs()} == {(3, 300, "torch")}
    mlp = orders_experiment(init="he")
    assert {(c.depth, c.width, c.init) for c in mlp.configs()} == {(1, 4, "he")}


def test_check_like_follows_the_default_type():
    from iteration_order.validation import check_like

    assert check_like("lr", 1, 0.5) == 1                 # an int is a number
    assert check_like("orders", ["forward"], ["forward", "backward"]) == ("forward",)
    assert check_like("anything", object, None) is object
    assert check_like("check", {"a": 1}, {"b": 2}) == {"a": 1}


def test_the_check_cell_passes_the_template_defaults_and_the_kernel_names():
    kernel_namespace()  # raises on any problem
    kernel_namespace(orders=["forward", "switch:20"], seeds=[3], lr=1, jobs=2, profile="cpu")
