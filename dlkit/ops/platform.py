"""Which platform an op's input runs on, for ops that pick their implementation by backend."""

import jax


def platform_of(x) -> str:
    """'cpu', 'gpu', 'tpu', ...: the device platform of a concrete array, else (a tracer, under
    jit) jax's default backend, the one the trace is compiled for unless placed elsewhere."""
    try:
        devices = x.devices()
    except (AttributeError, jax.errors.ConcretizationTypeError):
        return jax.default_backend()
    platforms = {d.platform for d in devices}
    platform = platforms.pop() if len(platforms) == 1 else jax.default_backend()
    return "gpu" if platform in ("cuda", "rocm") else platform
