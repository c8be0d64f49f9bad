"""AlexNet on CIFAR-10; inputs are resized to 64x64 inside the model so that the 11x11/4 stem and
three overlapping pools leave a 1x1 map (adaptive-pooled to 6x6 as in torchvision)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_cifar10")
    c.model.update(name="alexnet", input_size=64)
    c.num_train_steps = 60 * 50_000 // 128  # 60 epochs
    c.optimizer.learning_rate = 0.01
    return c
