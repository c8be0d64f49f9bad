"""Metric writing: stdout lines, workdir/metrics.jsonl and TensorBoard events (tensorboardX)."""

import json
import pathlib
import sys
import time


class MetricWriter:
    """Writes {name: scalar} per step; only the main process writes anything."""

    def __init__(self, workdir, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.workdir = pathlib.Path(workdir)
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drops JSON lines past `step` (written by a run that died before its next checkpoint)."""
        path = self.workdir / "metrics.jsonl"
        if not (self.enabled and path.exists()):
            return
        lines = [
            ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step
        ]
        path.write_text("".join(ln + "\n" for ln in lines))

    def write(self, step: int, metrics: dict, *, echo: bool = True) -> None:
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if echo:
            text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            print(f"step {step}: {text}", flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class Progress:
    """A tqdm bar (steps/s, ETA) on an interactive terminal; plain log lines otherwise."""

    def __init__(self, start: int, total: int, *, enabled: bool = True, force: bool | None = None):
        interactive = sys.stderr.isatty() if force is None else force
        self.bar = None
        self.start_time, self.start_step, self.total = time.perf_counter(), start, total
        if enabled and interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)

    def update(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def rate(self, step: int) -> float:
        """Steps per second since this run started."""
        return (step - self.start_step) / max(time.perf_counter() - self.start_time, 1e-9)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
