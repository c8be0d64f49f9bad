"""Preemption: stop at the end of the dispatch in flight when SIGTERM / SIGINT / SIGUSR1 arrive.

`SignalWatch` installs handlers only while a run is inside it (main thread only) and restores the
previous ones afterwards, so a host process keeps its own. The first signal sets a flag that the
loop reads after each dispatch (all processes agree through one tiny all-gather when there are
several); the loop then saves a checkpoint at that step and raises `Preempted`. A second signal
aborts at once: the previous handler runs (SIGINT: KeyboardInterrupt; SIGTERM: the default exit).
"""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

from dlkit.errors import ConfigError, choose

DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")


def parse_signals(names) -> tuple[signal.Signals, ...]:
    """Signal names (e.g. "SIGTERM" or "TERM") -> signal.Signals; ConfigError for unknown names."""
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    table = {s.name: s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP)}
    out = []
    for name in names or ():
        if not isinstance(name, str):
            raise ConfigError(f"preemption_signals takes signal names like 'SIGTERM', got {name!r}")
        upper = name.upper()
        out.append(choose(table, upper if upper.startswith("SIG") else "SIG" + upper, "signal"))
    return tuple(out)


class SignalWatch:
    """A context manager that turns the first of `signals` into a stop request."""

    def __init__(self, signals=DEFAULT_SIGNALS):
        self.signals = parse_signals(signals)
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "SignalWatch":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum)  # a second signal: abort at once
        self._restore()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: aborted")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def requested(self) -> bool:
        """Whether any process got a signal; a collective of one int when process_count > 1."""
        flag = self.signum is not None
        if jax.process_count() == 1:
            return flag

        return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
