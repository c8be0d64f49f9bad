"""The notes' MLP 784 -> 128 -> 64 -> 10 (ReLU) on MNIST: the shared 8,000 / 2,000 split by default
(data.dir unset and no prepared TFDS mnist), or any directory of idx files via --config.data.dir."""

from dlkit.extras.configs import sibling


def get_config():
    c = sibling(__file__, "_mnist")
    c.model.update(hidden_sizes=(128, 64), activation="relu", dropout_rate=0.2)
    c.update(num_train_steps=3000, log_every_steps=200)
    c.update(eval_every_steps=1000)
    c.checkpoint.every_steps = 1000
    # a 1.6 ms step is dispatch-bound on CPU: 10 steps per call, same results (cpu_suite: 0.84-0.95x
    # PyTorch eager at 1 per call, 1.83x at 10; benchmarks/RESULTS.md)
    c.parallel.steps_per_call = 10
    c.optimizer.update(name="adamw", weight_decay=1e-4, schedule="cosine", warmup_steps=0)
    return c
