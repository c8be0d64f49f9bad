"""The notes' MLP on digits with DP-SGD: per-example gradients clipped to norm 1, Gaussian noise
of std noise_multiplier * clip_norm added to their sum, plain SGD (as in Abadi et al. 2016)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mlp_digits")
    c.step.dp.update(enabled=True, clip_norm=1.0, noise_multiplier=1.1)
    c.update(batch_size=128, num_train_steps=1000)
    c.optimizer.update(name="sgd", learning_rate=0.5, schedule="constant")
    return c
