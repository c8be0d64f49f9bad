"""VGG-16 with BatchNorm on CIFAR-10 (model.name=vgg16 for the plain one): 32x32 leaves a 1x1 map
after five pools, so the classifier is 512 -> 512 -> 512 -> 10 (pool_size 1, hidden 512)."""

from dlkit.train.config import default_config


def get_config():
    c = default_config()
    c.model.name = "vgg16_bn"
    c.model.pool_size = 1
    c.model.hidden = 512
    c.data.name = "cifar10"  # TFDS array_record under data.tfds_dir, or data.download=True
    c.data.download = False
    c.data.augment = True  # random crop (zero pad 4) + horizontal flip, per-example seeds
    c.data.crop_padding = 4
    c.data.flip = True
    c.batch_size = 128
    c.num_train_steps = 100 * 50_000 // 128  # 100 epochs
    c.log_every_steps = 200
    c.eval_every_steps = 2000
    c.checkpoint_every_steps = 2000
    c.optimizer.name = "nesterov"
    c.optimizer.learning_rate = 0.05
    c.optimizer.momentum = 0.9
    c.optimizer.weight_decay = 5e-4
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 400
    return c
