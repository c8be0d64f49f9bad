"""ResNet-18 with the CIFAR stem (3x3/1 conv, no max pool) on CIFAR-10."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_cifar10")
    c.model.update(name="resnet18", cifar_stem=True)
    return c
