"""AlexNet on CIFAR-10; inputs are resized to 64x64 inside the model so that the 11x11/4 stem and
three overlapping pools leave a 1x1 map (adaptive-pooled to 6x6 as in torchvision)."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "alexnet"
    c.model.input_size = 64
    c.data.name = "cifar10"  # TFDS array_record under data.tfds_dir, or data.download=True
    c.data.download = False
    c.data.augment = True  # random crop (zero pad 4) + horizontal flip, per-example seeds
    c.data.crop_padding = 4
    c.data.flip = True
    c.batch_size = 128
    c.num_train_steps = 60 * 50_000 // 128  # 60 epochs
    c.log_every_steps = 200
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    c.optimizer.name = "nesterov"
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 400
    return c
