"""How many CPU devices a run splits its batch over when parallel.cpu_devices is 0 (auto).

One XLA:CPU step keeps only part of the machine busy (small ops run on one thread, and the
thread hand-offs between ops leave cores idle), so on a CPU with several cores the batch split
over one JAX CPU device per core (the door's dlkit.platform creates them) runs faster, except
when:
- the step is too small to share (below MIN_FLOPS_PER_DEVICE per device, dispatch-bound);
- the model keeps batch statistics (BatchNorm) and the step is below MIN_FLOPS_PER_DEVICE_BN per
  device: every normalised layer synchronises the devices twice per step, which costs more than
  the split gains on a small step (measured on 2 cores: vgg_small, 2.8 GFLOP per device, 0.88x
  -> 0.84x PyTorch when split; resnet18, 47 GFLOP per device, 0.68x -> 0.74x; BUILD_NOTES,
  "Platform (the door)");
- the batch does not divide: the largest divisor of the batch size up to the device count.
The step's cost counts its oneDNN convs and LSTM layers (dlkit.kernels.cpu: custom calls, which
XLA's cost analysis counts as 0), and a split runs each device's shard of them with cores / devices
oneDNN threads. oneDNN's convs already keep every core busy on one device, so against the BatchNorm
bar only the step's XLA part counts (the part a split speeds up); without batch statistics a split
costs one all-reduce and the whole step counts. Measured on 2 cores with oneDNN convs (load ~8,
cpu_suite --variants 1dev,2dev; one device / split wall time): lenet5 2.2x and cnn 1.2x (the split
wins), resnet18 0.88-0.91x in 2 of 3 noisy runs (all 3 in process CPU time) and vgg_small 0.95x (one
device wins; with XLA's convs resnet18's split won).
The choice depends only on the config, the model and the devices the process has, so a rerun
(resume) makes the same one; checkpoints restore on any device count. `decide` makes it before the
run's one Runner exists, costing the step on abstract shapes (nothing is placed or compiled).
"""

import dataclasses

import jax

from dlkit.kernels.cpu import dispatch
from dlkit.train.runner import step_functions

MIN_FLOPS_PER_DEVICE = 5e7  # FLOPs of one train step per device below which one device wins
MIN_FLOPS_PER_DEVICE_BN = 1e10  # the same for models with BatchNorm statistics


@dataclasses.dataclass(frozen=True)
class Layout:
    """The devices a run uses (None: every device) and the line to print (None: none)."""

    devices: int | None
    reason: str | None = None


def choose_devices(
    available: int, batch_size: int, batch_stats: bool, step_flops: float, native_flops: float = 0
) -> Layout:
    """The rule (pure): the largest divisor of the batch up to `available` whose share of the
    step is big enough, else 1; with batch statistics a higher bar, met by the step's FLOPs
    outside native calls (`native_flops` of `step_flops`: oneDNN convs, LSTM layers, attention)."""
    if available <= 1:
        return Layout(1, "one CPU device")
    least = MIN_FLOPS_PER_DEVICE_BN if batch_stats else MIN_FLOPS_PER_DEVICE
    counted = step_flops - native_flops if batch_stats else step_flops
    fits = [n for n in range(available, 0, -1) if batch_size % n == 0]
    n = [n for n in fits if n == 1 or counted / n >= least][0]
    gflop = f"{step_flops / 1e9:.2g} GFLOP/step"
    if native_flops:
        gflop += f", {native_flops / 1e9:.2g} in native calls"
    if n == 1 and fits == [1]:
        return Layout(1, f"one CPU device (batch {batch_size} does not divide among {available})")
    if n == 1 and batch_stats:
        return Layout(1, f"one CPU device ({gflop} with BatchNorm: syncing would cost more)")
    if n == 1:
        return Layout(1, f"one CPU device ({gflop}: too small to split)")
    return Layout(n, f"batch {batch_size} split over {n} CPU devices ({gflop})")


def _on_cpu(options) -> bool:
    """Kind sharded, one process, on the CPU backend."""
    return (
        options.parallel.kind == "sharded"
        and jax.process_count() == 1
        and jax.default_backend() == "cpu"
    )


def step_costs(step, state, batch: dict) -> tuple[float, float]:
    """(XLA's FLOPs, oneDNN calls' FLOPs) of one train step: XLA's cost analysis of the lowered
    step (no compile), which counts the oneDNN custom calls (convs, LSTM) as 0, and those calls
    counted apart.
    `state` and `batch` may be arrays or shapes (jax.ShapeDtypeStruct, jax.eval_shape's)."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), (state, batch))
    lowered = jax.jit(step).lower(*shapes)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    xla = float(cost["flops"]) if cost and "flops" in cost else 0.0
    return xla, dispatch.native_flops(lowered.as_text())


def step_flops(step, state, batch: dict) -> float:
    """FLOPs of one train step, its oneDNN calls included (step_costs)."""
    return sum(step_costs(step, state, batch))


def has_batch_stats(state) -> bool:
    """True when the model keeps batch statistics (a mutable collection such as BatchNorm's)."""
    return "batch_stats" in state.model_state and bool(
        jax.tree.leaves(state.model_state["batch_stats"])
    )


def decide(options, objective, init, example: dict) -> Layout:
    """The run's layout, before its Runner is built: parallel.cpu_devices N -> N (at most the
    devices there are); 0 (auto) -> choose_devices over the CPU devices the process has, the step
    costed on jax.eval_shape(init) (init() makes the fresh state); off the one-process sharded
    CPU case, every device (None). Only auto has a reason to print."""
    if not _on_cpu(options):
        return Layout(None)
    available = len(jax.devices())
    if options.parallel.cpu_devices:
        return Layout(min(options.parallel.cpu_devices, available))
    if available == 1:
        return Layout(1, "one CPU device")
    state = jax.eval_shape(init)
    train, _ = step_functions(options, objective)
    xla, onednn = step_costs(train, state, example)
    return choose_devices(
        available, options.batch_size, has_batch_stats(state), xla + onednn, onednn
    )
