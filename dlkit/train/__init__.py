"""TrainState, the shared train/eval steps, optimizers, the loop and checkpoints."""

from dlkit.train.checkpoint import Checkpointer, restore_latest
from dlkit.train.config import default_config
from dlkit.train.loop import build_model, create_state, train_and_evaluate
from dlkit.train.optim import make_optimizer
from dlkit.train.state import TrainState, create_train_state
from dlkit.train.step import eval_step, evaluate, make_steps, train_step

__all__ = [
    "Checkpointer",
    "TrainState",
    "build_model",
    "create_state",
    "create_train_state",
    "default_config",
    "eval_step",
    "evaluate",
    "make_optimizer",
    "make_steps",
    "restore_latest",
    "train_and_evaluate",
    "train_step",
]
