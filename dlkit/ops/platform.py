"""Which platform an op's input runs on, and the native backends registered for an op, for ops
that pick their implementation by backend (conv2d, max_pool2d, lstm_stack)."""

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


def register_backend(table: dict, name: str, fn, available, builtin, op: str) -> None:
    """table[name] = (fn, available): a CPU backend of `op` implemented above dlkit.ops (e.g. in
    dlkit.kernels); "auto" and the op's built-in impl names are refused."""
    if name in ("auto", *builtin):
        raise ValueError(f"register_impl: {name!r} is a built-in {op} impl; pick another name")
    table[name] = (fn, available or (lambda *args: True))


def registered_choice(table: dict, args, platform: str) -> str | None:
    """On CPU, the first backend in `table` whose available(*args) accepts the call; else None."""
    if platform == "cpu":
        for name, (_, available) in table.items():
            if available(*args):
                return name
    return None
