"""`dot_product_attention`: one call, several backends, chosen by name or by "auto".

Layering: the contract, masks and reference (dlkit.ops.attention) and the chunked backend
(dlkit.ops.chunked_attention) sit below this module; the Pallas kernel and the native CPU kernel
(dlkit.kernels) sit above it and plug themselves in with `register_kernel("pallas" | "cpu", ...)`
when dlkit.kernels is imported, which `import dlkit` does. So ops never imports kernels, and
`dlkit.ops.dot_product_attention` is this module's function.
"""

import functools

import jax
import jax.numpy as jnp

from dlkit import errors
from dlkit.ops.attention import (
    attention_mask,
    attention_reference,
    causal_offset,
    check_qkv,
    zero_empty_rows,
)
from dlkit.ops.chunked_attention import chunked_attention

IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "chunked", "pallas", "cpu")
KERNELS = ("pallas", "cpu")  # backends implemented above this layer
# CPU: above this many score bytes (B * H * Sq * Sk * 4) "auto" streams keys ("chunked"): it is
# also faster there (benchmarks/attention_memory.py --speed; RESULTS.md).
CHUNKED_SCORE_BYTES = 8 * 2**20
# KERNELS' (fn, accepts), filled once by their package at import (dlkit.kernels).
_KERNELS: dict = {}


def register_kernel(name: str, fn, accepts=None) -> None:
    """Makes fn(q, k, v, *, causal, segment_ids, kv_lengths, scale) the backend `name`;
    accepts(q, k, mask, segment_ids, kv_lengths) says when "auto" may take it."""
    if name not in KERNELS:
        raise ValueError(f"register_kernel: the kernel backends are {KERNELS}, got {name!r}")
    _KERNELS[name] = (fn, accepts)


def pallas_available() -> bool:
    """True once dlkit.kernels (the Pallas flash-attention kernel) has been imported."""
    return "pallas" in _KERNELS


def _cpu_kernel_accepts(q, k, mask, segment_ids, kv_lengths) -> bool:
    """Whether the native CPU kernel (dlkit.kernels.cpu) is registered and takes this call."""
    return "cpu" in _KERNELS and bool(_KERNELS["cpu"][1](q, k, mask, segment_ids, kv_lengths))


def check_implementation(name: str) -> str:
    """name, or ConfigError (a ValueError) 'unknown attention implementation ...; choose one of'."""
    return errors.choose({n: n for n in IMPLEMENTATIONS}, name, "attention implementation")


def _cudnn_eligible(q, mask, segment_ids) -> bool:
    """cuDNN flash attention: GPU sm80+, fp16/bf16, head_dim % 8 == 0 and <= 128, no mask arrays."""
    dev = jax.devices()[0]
    cc = float(getattr(dev, "compute_capability", "0") or 0)
    return (
        cc >= 8.0
        and mask is None
        and segment_ids is None
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 128
    )


def choose_implementation(
    q, k, *, mask=None, segment_ids=None, platform=None, kv_lengths=None
) -> str:
    """Name of the backend "auto" uses for these shapes and dtype on `platform` (default: jax's).
    On CPU the native kernel ("cpu") where it takes the call (float32 arrays, no mask arrays),
    else "xla", or "chunked" for large score matrices."""
    platform = platform or jax.default_backend()
    if platform == "gpu":
        if _cudnn_eligible(q, mask, segment_ids):
            return "cudnn"
        return "pallas" if mask is None and pallas_available() and k.shape[1] >= 1024 else "xla"
    if platform != "cpu":  # TPU etc.: dlkit's Pallas kernel targets GPUs (interprets elsewhere)
        return "xla"
    if _cpu_kernel_accepts(q, k, mask, segment_ids, kv_lengths):
        return "cpu"
    b, sq, h, _ = q.shape
    return "chunked" if b * h * sq * k.shape[1] * 4 > CHUNKED_SCORE_BYTES else "xla"


def _jax_nn(q, k, v, *, mask, causal, segment_ids, kv_lengths, scale, implementation):
    """jax.nn.dot_product_attention ("xla" or "cudnn") with dlkit's masks and empty-row zeros."""
    if implementation == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(
            f"attention implementation 'cudnn' needs a GPU (backend is {jax.default_backend()!r}); "
            "use 'xla', 'chunked' or 'auto'"
        )
    b, sq = q.shape[:2]
    sk = k.shape[1]
    top_left = causal_offset(causal, sq, sk) == 0  # jax.nn's is_causal; else the mask says it
    m = attention_mask(
        b, sq, sk, mask=mask, causal=False if top_left else causal, segment_ids=segment_ids
    )
    lengths = None if kv_lengths is None else jnp.asarray(kv_lengths, jnp.int32)
    if lengths is not None and lengths.shape != (b,):
        raise ValueError(f"attention: kv_lengths must be (B,) = ({b},), got {lengths.shape}")
    out = jax.nn.dot_product_attention(
        q, k, v, mask=m, scale=scale, is_causal=top_left, key_value_seq_lengths=lengths,
        implementation=implementation,
    )  # fmt: skip
    if m is None and lengths is None:
        return out  # top-left causal alone never empties a row (key 0 is always visible)
    full = attention_mask(
        b, sq, sk, mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=lengths
    )
    return zero_empty_rows(out, full)


def _pallas(q, k, v, *, mask, causal, segment_ids, kv_lengths, scale):
    """The Pallas flash-attention kernel (dlkit.kernels); it takes no arbitrary boolean mask."""
    if mask is not None:
        raise ValueError(
            "attention implementation 'pallas' takes causal/segment_ids/kv_lengths but no "
            "arbitrary mask; use implementation='chunked' or 'xla' for a boolean mask"
        )
    if not pallas_available():
        raise ValueError("attention implementation 'pallas' needs dlkit.kernels (import dlkit)")
    kw = dict(causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, scale=scale)
    return _KERNELS["pallas"][0](q, k, v, **kw)


def _cpu(q, k, v, *, mask, causal, segment_ids, kv_lengths, scale):
    """dlkit's native CPU kernel (dlkit.kernels.cpu.attention): float32, causal or not, no arrays
    of masks."""
    if any(a is not None for a in (mask, segment_ids, kv_lengths)):
        raise ValueError(
            "attention implementation 'cpu' takes causal but no mask, segment_ids or kv_lengths; "
            "use 'xla' or 'chunked' (or 'auto') for those"
        )
    if jax.default_backend() != "cpu":
        raise ValueError(
            f"attention implementation 'cpu' runs on the CPU backend (backend is "
            f"{jax.default_backend()!r}); use 'auto'"
        )
    if "cpu" not in _KERNELS:
        raise ValueError("attention implementation 'cpu' needs dlkit.kernels (import dlkit)")
    return _KERNELS["cpu"][0](q, k, v, causal=causal, scale=scale)


BACKENDS = {
    "reference": attention_reference,
    "xla": functools.partial(_jax_nn, implementation="xla"),
    "cudnn": functools.partial(_jax_nn, implementation="cudnn"),
    "chunked": chunked_attention,
    "pallas": _pallas,
    "cpu": _cpu,
}


def dot_product_attention(
    q, k, v, *, mask=None, causal=False, segment_ids=None, kv_lengths=None, scale=None,
    implementation="auto", return_choice=False,
):  # fmt: skip
    """out = softmax(q k^T * scale, masked) v; q (B,Sq,H,D), k/v (B,Sk,Hkv,D) -> (B,Sq,H,D).

    `implementation` is one of IMPLEMENTATIONS; "auto" uses `choose_implementation`, and
    `return_choice=True` returns (out, name of the backend used). `causal` is False, True /
    "top_left" (query i sees keys j <= i) or "bottom_right" (j <= i + Sk - Sq); see
    dlkit.ops.attention for every mask.
    """
    name = check_implementation(implementation)
    check_qkv(q, k, v)
    causal_offset(causal, q.shape[1], k.shape[1])  # a bad alignment fails before any backend
    if name == "auto":
        name = choose_implementation(
            q, k, mask=mask, segment_ids=segment_ids, kv_lengths=kv_lengths
        )
    kw = dict(mask=mask, causal=causal, segment_ids=segment_ids, kv_lengths=kv_lengths, scale=scale)
    out = BACKENDS[name](q, k, v, **kw)
    return (out, name) if return_choice else out
