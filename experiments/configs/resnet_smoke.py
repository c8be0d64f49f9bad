"""Smoke test of the resnet family: a width-4 ResNet-18 layout (one block per stage) with the CIFAR
stem on the 8x8 digits, 20 steps; --config.model.name=resnet50 tries the bottleneck blocks."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_smoke")
    c.model.update(name="resnet18", stage_sizes=(1, 1, 1, 1), width=4, cifar_stem=True)
    return c
