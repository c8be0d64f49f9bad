"""VGG-16 with BatchNorm on CIFAR-10 (model.name=vgg16 for the plain one): 32x32 leaves a 1x1 map
after five pools, so the classifier is 512 -> 512 -> 512 -> 10 (pool_size 1, hidden 512)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_cifar10")
    c.model.update(name="vgg16_bn", pool_size=1, hidden=512)
    c.optimizer.learning_rate = 0.05
    return c
