"""Metric writing: stdout lines, workdir/metrics.jsonl and TensorBoard events (dlkit.train.events).

metrics.jsonl is strict JSON (RFC 8259): a non-finite value is written as null. A run that
resumes at step S keeps the lines up to S only (none without a checkpoint) and rebuilds the
TensorBoard events from them, so neither ever repeats a step after an interruption.
"""

import json
import logging
import math
import pathlib
import sys
import time

from dlkit.train.events import ScalarEvents, read_scalars

log = logging.getLogger("dlkit")


def _finite_or_none(v):
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _parse(line: str) -> dict | None:
    """One metrics.jsonl line, or None for a line cut short by a killed process."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def read_lines(path) -> list[dict]:
    """The readable rows of a metrics.jsonl file (none when it is absent)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows = (_parse(ln) for ln in path.read_text().splitlines() if ln.strip())
    return [r for r in rows if r is not None]


def dumps(step: int, metrics: dict) -> str:
    """One strict-JSON line: {"step": step, **metrics} with NaN/Infinity as null."""
    row = {"step": step, **{k: _finite_or_none(v) for k, v in metrics.items()}}
    return json.dumps(row, allow_nan=False)


class MetricWriter:
    """Writes {name: scalar} per step; only the main process writes anything.

    `start_step` is the step the run resumes at (0: fresh): later lines and events are dropped.
    """

    def __init__(
        self, workdir, *, enabled: bool = True, tensorboard: bool = True, start_step: int = 0
    ):
        self.enabled = enabled
        self.workdir = pathlib.Path(workdir)
        self._tb = None
        if not enabled:
            return
        rows = self.truncate_after(start_step)
        if tensorboard:
            self._open_tensorboard(rows)

    def _open_tensorboard(self, rows: list[dict]) -> None:
        """A fresh events file holding `rows` (older event files are replaced)."""
        directory = self.workdir / "tensorboard"
        for old in directory.glob("events.out.tfevents.*"):
            old.unlink()  # derived data: rebuilt from metrics.jsonl just below
        self._tb = ScalarEvents(directory)
        for row in rows:
            self._add_scalars(row["step"], {k: v for k, v in row.items() if k != "step"})

    def _add_scalars(self, step: int, metrics: dict) -> None:
        finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
        self._tb.add(step, {k: float(v) for k, v in metrics.items() if finite(v)})

    def truncate_after(self, step: int) -> list[dict]:
        """Keeps the lines up to `step` (later ones came from a run that died); returns them."""
        path = self.workdir / "metrics.jsonl"
        if not (self.enabled and path.exists()):
            return []
        rows = [r for r in read_lines(path) if r["step"] <= step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(dumps(r["step"], r) + "\n" for r in rows))
        tmp.replace(path)  # atomic: a kill here leaves the old or the new file, never half
        return rows

    def write(self, step: int, metrics: dict, *, echo: bool = True) -> None:
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(dumps(step, metrics) + "\n")
        if self._tb is not None:
            self._add_scalars(step, metrics)  # written and flushed
        if echo:
            text = " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            log.info(f"step {step}: {text}")

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


def read_tensorboard(workdir) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in workdir/tensorboard's event files (TFRecord)."""
    paths = sorted((pathlib.Path(workdir) / "tensorboard").glob("events.out.tfevents.*"))
    return [row for path in paths for row in read_scalars(path)]
