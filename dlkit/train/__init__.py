"""TrainState, the shared train/eval steps, optimizers, the loop, checkpoints and loading runs.

Listed in the order of docs/API.md.
"""

from dlkit.train.build import build_model, create_state, make_optimizer
from dlkit.train.checkpoint import Checkpointer, restore_latest
from dlkit.train.config import default_config, validate
from dlkit.train.load import Loaded, load, load_params, save_params
from dlkit.train.loop import train_and_evaluate
from dlkit.train.objectives import summarize
from dlkit.train.options.sections import RunOptions
from dlkit.train.state import TrainState, create_train_state
from dlkit.train.step import eval_step, evaluate, make_steps, train_step

__all__ = [
    "default_config",
    "RunOptions",
    "validate",
    "train_and_evaluate",
    "build_model",
    "create_state",
    "TrainState",
    "create_train_state",
    "make_optimizer",
    "make_steps",
    "train_step",
    "eval_step",
    "evaluate",
    "summarize",
    "Checkpointer",
    "restore_latest",
    "load",
    "Loaded",
    "save_params",
    "load_params",
]
