"""Cost of a jitted function: FLOPs and bytes from XLA's cost analysis, intensity, measured time.

  intensity I = FLOPs / bytes accessed (FLOP per byte);  roofline: attainable FLOP/s =
  min(peak FLOP/s, I * peak bytes/s); a kernel is memory-bound when I < peak FLOP/s / peak bytes/s.
XLA counts a loop body (lax.scan, fori_loop, while) once, not once per trip: `Cost.has_loop` flags
such functions, and `profile(..., flops=, bytes_accessed=)` takes counts worked out by hand.
`time_round_robin` is the benchmarks' one timer (peers in turn, so load hits all alike);
`machine` describes the machine a figure ran on.
"""

import dataclasses
import math
import os
import platform
import re
import statistics
import sys
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jaxlib


@dataclasses.dataclass(frozen=True)
class Cost:
    """One function's FLOPs, bytes accessed and median time (seconds) per call."""

    name: str
    flops: float
    bytes_accessed: float
    seconds: float = math.nan
    has_loop: bool = False
    source: str = "xla"  # "xla" (cost analysis) or "given" (counts passed in)

    @property
    def intensity(self) -> float:
        """FLOP per byte accessed; 0 when nothing is read or written."""
        return self.flops / self.bytes_accessed if self.bytes_accessed else 0.0

    @property
    def flops_per_sec(self) -> float:
        return self.flops / self.seconds

    @property
    def bytes_per_sec(self) -> float:
        return self.bytes_accessed / self.seconds


def cost_analysis(fn, *args) -> dict:
    """{"flops", "bytes_accessed", "has_loop"} of jax.jit(fn)(*args) as compiled by XLA."""
    compiled = jax.jit(fn).lower(*args).compile()
    costs = compiled.cost_analysis()
    if isinstance(costs, list | tuple):  # older jax: one dict per computation
        costs = costs[0] if costs else {}
    costs = costs or {}
    return {
        "flops": float(costs.get("flops", 0.0)),
        "bytes_accessed": float(costs.get("bytes accessed", 0.0)),
        "has_loop": " while(" in compiled.as_text(),
    }


class Timed(NamedTuple):
    """Returned by a closure that times itself (a peer in another process): its (wall,
    process-CPU) seconds, which time_round_robin records instead of this process's."""

    wall: float
    cpu: float


def time_round_robin(runs: dict, rounds: int, warmup: int = 3, stat: str = "median") -> dict:
    """{name: (wall, process-CPU) seconds per call}: the closures run in turn `rounds` times (so
    load from other processes hits all alike), median or "min" (the least disturbed) of each.
    A closure returning `Timed` reports its own time."""
    if rounds < 1 or stat not in ("median", "min"):
        raise ValueError(f"need rounds >= 1 and stat median|min, got {rounds}, {stat!r}")
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            out = run()
            here = (time.perf_counter() - wall, time.process_time() - cpu)
            times[name].append(tuple(out) if isinstance(out, Timed) else here)
    pick = min if stat == "min" else statistics.median
    return {name: tuple(pick(col) for col in zip(*ts, strict=True)) for name, ts in times.items()}


def time_fn(fn, *args, repeats: int = 10, warmup: int = 2, stat: str = "median") -> float:
    """Median (or "min") wall-clock seconds of one call of jax.jit(fn)(*args), compile excluded."""
    if repeats < 1 or stat not in ("median", "min"):
        raise ValueError(f"time_fn: need repeats >= 1 and stat median|min, got {repeats}, {stat!r}")
    jitted = jax.jit(fn)
    run = {"fn": lambda: jax.block_until_ready(jitted(*args))}
    return time_round_robin(run, repeats, warmup, stat)["fn"][0]


def profile(
    fn,
    *args,
    name: str = "",
    repeats: int = 10,
    stat: str = "median",
    flops=None,
    bytes_accessed=None,
) -> Cost:
    """Cost of fn(*args): XLA's FLOPs and bytes (or the given ones) and time_fn's time."""
    counts = cost_analysis(fn, *args)
    given = flops is not None or bytes_accessed is not None
    seconds = time_fn(fn, *args, repeats=repeats, stat=stat) if repeats else math.nan
    return Cost(
        name=name or getattr(fn, "__name__", "fn"),
        flops=counts["flops"] if flops is None else float(flops),
        bytes_accessed=counts["bytes_accessed"]
        if bytes_accessed is None
        else float(bytes_accessed),
        seconds=seconds,
        has_loop=counts["has_loop"],
        source="given" if given else "xla",
    )


def layer_calls(model, variables, *args, **kwargs) -> list[tuple]:
    """[(path, module, its variables, its args)] for each leaf submodule call in model.apply."""
    calls, stack = [], []

    def interceptor(next_fun, call_args, call_kwargs, context):
        if context.method_name != "__call__" or not context.module.path:
            return next_fun(*call_args, **call_kwargs)
        record = {"module": context.module, "args": call_args, "leaf": True}
        if stack:
            stack[-1]["leaf"] = False
        stack.append(record)
        try:
            return next_fun(*call_args, **call_kwargs)
        finally:
            stack.pop()
            if record["leaf"]:
                mod = record["module"]
                calls.append(("/".join(mod.path), mod, mod.variables, record["args"]))

    with nn.intercept_methods(interceptor):
        model.apply(variables, *args, **kwargs)
    return calls


def profile_layers(
    model, variables, *args, repeats: int = 10, stat: str = "median", **kwargs
) -> list[Cost]:
    """Cost of every leaf layer of model.apply(variables, *args), in call order; identity layers
    (a deterministic Dropout) and layers that neither compute nor move data are left out."""
    costs = []
    for path, module, layer_vars, layer_args in layer_calls(model, variables, *args, **kwargs):
        if getattr(module, "deterministic", None) is True:
            continue
        standalone = module.clone(parent=None)

        def fn(v, *a, standalone=standalone):
            return standalone.apply(v, *a)

        c = profile(fn, dict(layer_vars), *layer_args, name=path, repeats=repeats, stat=stat)
        if c.flops or c.bytes_accessed:
            costs.append(dataclasses.replace(c, name=f"{path} ({type(module).__name__})"))
    return costs


def bound(cost: Cost, peak_flops: float, peak_bytes_per_sec: float) -> str:
    """ "memory" if intensity < ridge = peak FLOP/s / peak bytes/s, else "compute"."""
    return "memory" if cost.intensity < peak_flops / peak_bytes_per_sec else "compute"


ISA = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict:
    """The machine a measurement ran on: CPU model, ISA flags that matter, cores, load, versions
    (torch's only when the caller imported it), allocator and XLA environment."""
    info = {"model": platform.processor() or "unknown", "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            info["model"] = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            info["flags"] = [f for f in ISA if f in m.group(1).split()]
        if m := re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M):
            info["vendor"] = m.group(1).strip()
    except OSError:
        pass
    torch = sys.modules.get("torch")
    info.update(
        cpus_usable=len(os.sched_getaffinity(0)),
        cpus_online=os.cpu_count(),
        loadavg=os.getloadavg(),
        python=platform.python_version(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        torch=torch.__version__ if torch else None,
        torch_threads=torch.get_num_threads() if torch else None,
        jax_devices=len(jax.devices()),
        env={
            k: v
            for k, v in os.environ.items()
            if k.startswith(("MALLOC_", "XLA_", "OMP_", "MKL_", "DLKIT_"))
            or k in ("LD_PRELOAD", "NPROC")
        },
    )
    return info


def results_name(kind: str, info: dict, stamp: str) -> str:
    """<kind>-<cpu model slug>-<stamp>.json: a results file's name."""
    cpu = re.sub(r"[^a-z0-9]+", "-", info["model"].lower()).strip("-")[:40]
    return f"{kind}-{cpu}-{stamp}.json"
