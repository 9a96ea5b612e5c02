"""iteration_order: forward, backward and mixed iteration orders for training maps.

Read top-down as the paper: orders over any maps (`iterates`), the SGD maps of a network
(`sgd_maps`, `optimizer_maps`), then whole trajectories with recorded curves (`run_trajectory`),
their cost before they start (`estimate_costs`) and many of them in parallel (`run_many`); then
second-order tools without Hessians (`BatchLoss`, `top_eigenpairs`), Appendix C's approximate
backward iterate (`approximate_backward`), Appendix D's micro-batch updates (`update_maps`) and
Hessian probes along any run (`run_probes`).

The book (its registry, page runner, each page's experiment, tables and figures) is the
subpackage `iteration_order.book`, which this library never imports; the library itself needs no
plotting or table library.
"""
from .cache import (MissingResultError, StaleResultWarning, atomic_write_json, config_hash,
                    read_json)
from .data import DATASET_NAMES, DataNotFoundError, Dataset, load_dataset
from .families import MapFamily, register_update, updates
from .maps import (OptimizerMaps, SGDMaps, check_schedule, initial_optimizer_state, initial_state,
                   optimizer_maps, sgd_maps, supports_grouping)
from .models import MLP, MODEL_NAMES, build_model
from .orders import (Backward, Forward, GroupedMaps, InPlaceMaps, Iteration, Order, Reset, SwitchAt,
                     as_order, iterates, planned_applications)
from .schedule import batch_schedule
from .seeding import generator, seed_everything, set_threads
from .trajectory import (ENGINES, OPTIMIZERS, Runtime, TrajectoryConfig, parse_record, prepare,
                         recorded_steps, run_trajectory)
from .cost import CostEstimate, cost_table, estimate_costs
from .parallel import RunsFailed, run_many
from .hessian import BatchLoss, top_eigenpairs
from .lie import approximate_backward, corrections, lie_bracket
from .order_average import UPDATES, gradients_and_correction, update_maps
from .sharpness import HessianProbe, Probe, run_probes

__version__ = "0.1.0"
