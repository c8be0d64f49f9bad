"""Non-finite loss or gradients: the loop's side of the train step's "nonfinite" flag.

The step returns the flag with its metric sums (no extra host sync); `NonFiniteWatch` keeps the
flags of the dispatches since the last check as device scalars and reads them only at the loop's
sync points (log, eval, checkpoint, stop), to name the first non-finite step.
"""

import jax

MAX_PENDING = 1024  # dispatches between forced checks (bounds the kept flags)


class NonFiniteWatch:
    """Flags per dispatch since the last check; `first_bad_step` reads them (one device_get)."""

    def __init__(self):
        self.pending: list = []

    def record(self, start: int, sums: dict) -> dict:
        """Keeps this dispatch's flag (its steps start after `start`); returns sums without it."""
        sums = dict(sums)
        first = sums.pop("nonfinite_first", None)
        if "nonfinite" in sums:
            self.pending.append((start, sums["nonfinite"], first))
        return sums

    def due(self) -> bool:
        return len(self.pending) >= MAX_PENDING

    def first_bad_step(self) -> int | None:
        """The first step since the last check whose loss or gradients were non-finite."""
        pending, self.pending = self.pending, []
        values = jax.device_get([(flag, first) for _, flag, first in pending])
        for (start, _, _), (flag, first) in zip(pending, values, strict=True):
            if float(flag) > 0:
                return start + (int(first) if first is not None else 1)
        return None
