"""Base of the CIFAR-10 configs (not a config itself): augmented data, Nesterov SGD with a
warmup-cosine schedule over 100 epochs; a variant sets the model and what else differs."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    # TFDS array_record under data.tfds_dir, or data.download=True; augment: random crop (zero pad
    # 4) + horizontal flip, per-example seeds
    c.data.update(name="cifar10", download=False, augment=True, crop_padding=4, flip=True)
    c.update(batch_size=128, num_train_steps=100 * 50_000 // 128)  # 100 epochs
    c.update(log_every_steps=200, eval_every_steps=2000)
    c.checkpoint.every_steps = 2000
    c.optimizer.update(name="nesterov", learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
    c.optimizer.update(schedule="warmup_cosine", warmup_steps=400)
    return c
