"""Grain pipelines: a seeded, reshuffled-each-epoch, checkpointable training iterator and padded
evaluation batches."""

import numpy as np

from dlkit.data.dataset import Dataset
from dlkit.errors import ConfigError


def train_iterator(
    dataset: Dataset,
    batch_size: int,
    seed: int,
    *,
    shard_index: int = 0,
    shard_count: int = 1,
    read_threads: int = 0,
):
    """Infinite iterator of training batches; `.get_state()` / `.set_state()` give exact resume.

    Batches are read in the consumer's thread (`read_threads=0`): XLA's asynchronous dispatch
    already overlaps building batch n + 1 with step n. Grain's default (16 threads reading 500
    batches ahead) fought the train step and the checkpoint thread for the cores and the GIL
    (BUILD_NOTES, "Data"). `read_threads` > 0 reads that many batches ahead on as many threads
    (slow remote storage); the order and the resume state are the same either way.

    Order: Grain's seeded shuffle (a new permutation each epoch); `augment` draws from a
    per-example seed, so a resumed run sees the same augmented batches. With shard_count P
    processes, `batch_size` is the per-process batch and process p gets rows [p b, (p + 1) b) of
    every global batch of P b: the global batches do not depend on the number of processes.
    """
    import grain

    n = len(dataset.train)
    if batch_size * shard_count > n:
        raise ConfigError(
            f"batch_size {batch_size * shard_count} exceeds the {n} training examples "
            f"of {dataset.name!r}; lower --config.batch_size"
        )
    ds = grain.MapDataset.source(dataset.train)
    ds = ds.shuffle(seed=seed).repeat(None)
    if dataset.augment is not None:
        ds = ds.random_map(dataset.augment, seed=seed + 1)
    ds = ds.map(dataset.preprocess).batch(batch_size, drop_remainder=True)
    if shard_count > 1:  # this process's block of each global batch
        ds = ds[shard_index::shard_count]
    ahead = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=read_threads)
    return iter(ds.to_iter_dataset(ahead))


def stack_examples(examples: list[dict]) -> dict:
    """List of per-example dicts -> dict of stacked arrays (B, ...)."""
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def pad_batch(batch: dict, batch_size: int) -> dict:
    """Pads a short batch with zeros to batch_size; "mask" (B,) or (B, T) is 1 on real rows."""
    n = len(batch["targets"])
    mask = np.ones(batch["targets"].shape, np.float32)
    out = {"mask": mask, **batch} if "mask" not in batch else dict(batch)
    if n == batch_size:
        return out
    pad = batch_size - n
    return {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in out.items()}


def eval_batches(dataset: Dataset, batch_size: int, split: str = "test") -> list[dict]:
    """The whole split, in order, as padded, masked batches of a fixed size."""
    source = getattr(dataset, split)
    batches = []
    for start in range(0, len(source), batch_size):
        idx = range(start, min(start + batch_size, len(source)))
        batches.append(
            pad_batch(stack_examples([dataset.preprocess(source[i]) for i in idx]), batch_size)
        )
    return batches
