"""The notes' CNN (conv32-pool-conv64-pool-dense256) on MNIST: the shared 8,000 / 2,000 split by
default (or data.dir / a prepared TFDS mnist). model.impl "auto": the fast conv/pool path on CPU."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mnist")
    c.model.update(name="cnn", dropout_rate=0.3)
    c.num_train_steps = 1500
    c.optimizer.update(name="adamw", weight_decay=1e-4)
    return c
