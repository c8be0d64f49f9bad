"""ResNet-18 with the CIFAR stem on MNIST in CIFAR's shape: each image repeated to 3 channels and
resized to 32x32 (data.preprocess="imagenet", data.image_size=32), so the step is the CIFAR
model's step on data that is here offline (the shared 8,000 / 2,000 split). Batch 64, Nesterov
SGD with a short warmup-cosine schedule. model.impl / model.norm_impl pick the convs' and the
batch norms' implementation ("auto": oneDNN and dlkit's kernel on CPU; "fast" / "reference":
XLA's)."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mnist")
    c.data.update(preprocess="imagenet", image_size=32)
    c.model.update(name="resnet18", cifar_stem=True, impl="auto", norm_impl="auto")
    c.update(batch_size=64, num_train_steps=300, eval_every_steps=100)
    c.checkpoint.every_steps = 100
    c.optimizer.update(name="nesterov", learning_rate=0.05, momentum=0.9, weight_decay=5e-4)
    c.optimizer.update(schedule="warmup_cosine", warmup_steps=30)
    return c
