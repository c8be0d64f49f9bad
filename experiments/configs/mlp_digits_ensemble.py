"""The notes' MLP on digits as an ensemble of 5 members (seeds seed .. seed + 4) trained together
by one vmapped step; eval metrics are the ensemble's (log of the mean of the members' softmax)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mlp_digits")
    c.parallel.ensemble_size = 5
    c.model.dropout_rate = 0.1
    return c
