"""Round-robin timing for the CPU benchmarks: peers run in turn, so load hits all alike."""

import time

import numpy as np


def time_round_robin(steps: dict, rounds: int, warmup: int = 3) -> dict:
    """Median (wall, process CPU) seconds per call of each closure, in turn `rounds` times."""
    for run in steps.values():
        for _ in range(warmup):
            run()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, run in steps.items():
            t, c = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - t, time.process_time() - c))
    return {name: tuple(np.median(np.array(ts), axis=0)) for name, ts in times.items()}
