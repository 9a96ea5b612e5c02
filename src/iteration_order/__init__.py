"""iteration_order: forward, backward and mixed iteration orders for training maps.

Read top-down as the paper: orders over any maps (`iterates`), the SGD maps of a network
(`sgd_maps`, `optimizer_maps`), then whole trajectories with recorded curves (`run_trajectory`),
their cost before they start (`estimate_costs`) and many of them in parallel (`run_many`).
"""
from .cache import atomic_write_json, config_hash, read_json
from .data import DATASET_NAMES, DataNotFoundError, Dataset, load_dataset
from .maps import (OptimizerMaps, SGDMaps, initial_optimizer_state, initial_state, optimizer_maps,
                   sgd_maps, supports_grouping)
from .models import MLP, MODEL_NAMES, build_model
from .orders import (Backward, Forward, GroupedMaps, InPlaceMaps, Iteration, Order, Reset, SwitchAt,
                     as_order, iterates, planned_applications)
from .schedule import batch_schedule
from .seeding import generator, seed_everything, set_threads
from .trajectory import (ENGINES, OPTIMIZERS, Runtime, TrajectoryConfig, parse_record, prepare,
                         recorded_steps, run_trajectory)
from .cost import CostEstimate, cost_table, estimate_costs
from .parallel import run_many

__version__ = "0.1.0"
