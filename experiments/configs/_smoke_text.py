"""Base of the text smoke configs (not a config itself): the smoke schedule on pydoc topics,
32-character windows, batch 8, Adam 3e-3 with clipping; a variant sets the model."""

from ml_collections import config_dict

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke")
    c.data.update(name="pydoc", seq_len=32, train_stride=32, eval_fraction=0.01)
    c.data.path = config_dict.placeholder(str)
    c.update(batch_size=8, eval_batch_size=64)
    c.optimizer.update(name="adam", learning_rate=3e-3, grad_clip_norm=1.0)
    return c
