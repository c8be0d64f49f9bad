"""Per-layer summaries: output shape, parameter count and receptive field; parameter sharing.

`summary(model, input_shape)` traces `model.init` abstractly (no arrays are allocated) and records
every leaf module call. Receptive fields follow r_out = r_in + (k - 1) * j_in, j_out = j_in * s
(kernel k, stride s, j the input pixels between adjacent outputs) for layers with `kernel_size` or
`window_shape` and `strides`; a dense layer on a flattened map sees the whole input ("all").
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LayerRow:
    name: str  # module path, e.g. "conv_0"
    kind: str  # module class, e.g. "Conv2D"
    input_shape: tuple[int, ...]  # without the batch axis
    output_shape: tuple[int, ...]
    params: int
    receptive_field: int | None  # input pixels (per side) one output sees; None = the whole input
    kernel_shape: tuple[int, ...] | None = None  # the "kernel" parameter's shape, if any


@dataclasses.dataclass(frozen=True)
class Summary:
    rows: tuple[LayerRow, ...]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    def __str__(self) -> str:
        head = ("layer", "type", "output", "params", "receptive field")
        body = [
            (
                r.name,
                r.kind,
                "x".join(map(str, r.output_shape)),
                f"{r.params:,}",
                "all" if r.receptive_field is None else f"{r.receptive_field}x{r.receptive_field}",
            )
            for r in self.rows
        ]
        body.append(("total", "", "", f"{self.total_params:,}", ""))
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        fmt = lambda row: "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths) - 2), *map(fmt, body)])


def _window(module) -> tuple[int, int] | None:
    """(kernel, stride) along H for conv and pooling modules, else None."""
    k = getattr(module, "kernel_size", None) or getattr(module, "window_shape", None)
    if k is None:
        return None
    s = getattr(module, "strides", None) or k
    k, s = (k, s) if isinstance(k, int) else (k[0], s if isinstance(s, int) else s[0])
    return int(k), int(s)


def summary(model: nn.Module, input_shape, dtype=jnp.float32, **call_kwargs) -> Summary:
    """Traces model.init on one `input_shape` example (no batch axis); tables its leaf layers."""
    x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
    rows, known, keep, stack = [], {}, [], []
    state = {"last": (1, 1)}  # (receptive field, jump) of the most recent layer output

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or not args or not hasattr(args[0], "shape"):
            return next_fun(*args, **kwargs)
        inp = args[0]
        keep.append(inp)
        r, j = known.setdefault(id(inp), state["last"])
        stack.append(0)
        y = next_fun(*args, **kwargs)
        children = stack.pop()
        if stack:
            stack[-1] += 1
        if children or context.module.parent is None or not hasattr(y, "shape"):
            return y
        window = _window(context.module)
        if window is not None and r is not None:
            r, j = r + (window[0] - 1) * j, j * window[1]
        elif isinstance(context.module, nn.Dense) and inp.ndim == 2:
            r = None
        keep.append(y)
        known[id(y)] = state["last"] = (r, j)  # r None: every later layer sees the whole input
        params = context.module.variables.get("params", {})
        kernel = params.get("kernel") if hasattr(params, "get") else None
        rows.append(
            LayerRow(
                "/".join(context.module.path) or context.module.name,
                type(context.module).__name__,
                tuple(inp.shape[1:]),
                tuple(y.shape[1:]),
                sum(math.prod(p.shape) for p in jax.tree.leaves(params)),
                r,
                None if kernel is None else tuple(kernel.shape),
            )
        )
        return y

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, **call_kwargs))
    return Summary(tuple(rows))


@dataclasses.dataclass(frozen=True)
class SharingRow:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C_in)
    output_shape: tuple[int, int, int]  # (H_out, W_out, C_out)
    conv_weights: int  # kh * kw * C_in * C_out: one filter bank shared over every position
    dense_weights: int  # H * W * C_in * C_out: C_out units each wired to the whole input
    dense_map_weights: int  # H W C_in * H_out W_out C_out: a dense map with the conv's output size

    def __str__(self) -> str:
        h, w, c = self.input_shape
        co = self.output_shape[-1]
        return (
            f"{self.name}: conv {self.conv_weights:,} weights vs dense {h}x{w}x{c}x{co} = "
            f"{self.dense_weights:,} ({self.dense_weights / self.conv_weights:,.0f}x), "
            f"dense to the whole {'x'.join(map(str, self.output_shape))} map = "
            f"{self.dense_map_weights:,}"
        )


def conv_vs_dense(
    input_shape, features: int, kernel_size: int, output_hw=None, name: str = "conv"
) -> SharingRow:
    """Weights of a k x k conv with `features` filters on (H, W, C) against dense equivalents."""
    h, w, c = input_shape
    ho, wo = output_hw or (h, w)
    return SharingRow(
        name,
        (h, w, c),
        (ho, wo, features),
        kernel_size**2 * c * features,
        h * w * c * features,
        h * w * c * ho * wo * features,
    )


def parameter_sharing(model: nn.Module, input_shape, **call_kwargs) -> list[SharingRow]:
    """For every conv layer of `model` (a 4-d "kernel"), its weights against dense layers."""
    out = []
    for r in summary(model, input_shape, **call_kwargs).rows:
        if r.kernel_shape is not None and len(r.kernel_shape) == 4:
            kh, kw, ci, co = r.kernel_shape
            h, w, _ = r.input_shape
            row = conv_vs_dense((h, w, ci), co, kh, r.output_shape[:2], r.name)
            out.append(dataclasses.replace(row, conv_weights=kh * kw * ci * co))
    return out
