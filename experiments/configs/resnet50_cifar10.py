"""ResNet-50 (bottleneck blocks) with the CIFAR stem (3x3/1 conv, no max pool) on CIFAR-10."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "resnet18_cifar10")
    c.model.name = "resnet50"
    return c
