"""The profiling window (`config.profile`): a jax.profiler trace of a few train steps.

Steps start_step .. start_step + num_steps - 1 are traced into `<workdir>/profile` (TensorBoard's
profile plugin: `tensorboard --logdir <workdir>/profile`; or its perfetto_trace.json.gz in
ui.perfetto.dev), each dispatch inside a `StepTraceAnnotation("train", step_num=<its first
step>)`. Dispatches are cut at the window's edges (`edges`), so with steps_per_call > 1 the trace
holds whole calls of exactly those steps. A run resumed inside the window traces the steps that
remain; one resumed past it traces nothing. A run that ends or stops (preemption, an error) inside
the window stops the trace there and says which steps it holds. The trace starts after the step
before the window has finished (no earlier work in it) and stops once its last step has.
"""

import contextlib
import pathlib
from collections.abc import Callable

import jax


class ProfileWindow:
    """Starts and stops one jax.profiler trace around the window's dispatches; see the module."""

    def __init__(self, options, directory, say: Callable[[str], None] = print):
        self.first, self.end = options.start_step, options.start_step + options.num_steps
        self.enabled = options.num_steps > 0
        self.directory, self.say = pathlib.Path(directory), say
        self.since: int | None = None  # first traced step while a trace runs
        self.step = 0  # the last step whose dispatch ended

    @property
    def edges(self) -> tuple[int, ...]:
        """The steps a dispatch must start at (dlkit.train.schedule.steps_this_call)."""
        return (self.first, self.end) if self.enabled else ()

    @contextlib.contextmanager
    def call(self, step: int, state=None):
        """Around one dispatch starting at `step`: starts the trace at the window, annotates."""
        if self.since is None and self.enabled and self.first <= step < self.end:
            self._start(step, state)
        if self.since is None:
            yield
            return
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            yield

    def after(self, step: int, state) -> None:
        """After the dispatch that reached `step`: stops the trace at the window's end."""
        self.step = step
        if self.since is not None and step >= self.end:
            jax.block_until_ready(state)  # the window's device work is in the trace
            self._stop(step)

    def close(self) -> None:
        """Stops a trace still running (the run ended or stopped inside the window); never
        raises, so the run's own error (or its checkpoint) comes first."""
        if self.since is None:
            return
        try:
            self._stop(self.step, early=True)
        except Exception as e:  # noqa: BLE001 (the profiler's failure must not hide the run's)
            self.say(f"profile: the trace from step {self.since} could not be written ({e})")
            self.since = None

    def _start(self, step: int, state) -> None:
        if state is not None:
            jax.block_until_ready(state)  # earlier steps stay out of the trace
        try:
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
        except RuntimeError as e:  # e.g. the host process is already tracing
            self.say(f"profile: no trace of steps {step}..{self.end - 1} ({e})")
            self.enabled = False
            return
        self.since = step

    def _stop(self, step: int, early: bool = False) -> None:
        since = self.since
        jax.profiler.stop_trace()
        self.since = None
        runs = sorted((self.directory / "plugins" / "profile").glob("*"), key=_mtime)
        where = runs[-1] if runs else self.directory
        cut = f" (the run stopped at step {step})" if early else ""
        self.say(f"profile: trace of steps {since}..{step - 1} written to {where}{cut}")


def _mtime(path: pathlib.Path) -> float:
    return path.stat().st_mtime
