"""GPU readiness without a GPU: the Pallas flash-attention kernel lowers through Triton for CUDA.

`jax.export` with platforms=["cuda"] lowers in this process, with no GPU present: Pallas emits its
Triton IR into a custom call. Triton custom calls carry no serialization-compatibility guarantee,
so that one export check is disabled (the module is inspected, never shipped). Asserting the
custom call and the kernels' names means the test cannot pass on an XLA fallback or interpret
mode. Goal shapes: bf16, B 2, H 16 over 4 KV heads (GQA), segment ids, D 64/128, S 4k and 16k.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

from dlkit.kernels.flash_attention import flash_attention

# jax 0.10 names Pallas's Triton call "__gpu$xla.gpu.triton"; older jaxes "triton_kernel_call"
TRITON_TARGETS = ("__gpu$xla.gpu.triton", "triton_kernel_call")
DISABLED = [export.DisabledSafetyCheck.custom_call(t) for t in TRITON_TARGETS]


def _export_cuda(fn, *args) -> str:
    exported = export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=DISABLED)(*args)
    assert exported.platforms == ("cuda",)
    return exported.mlir_module()


def _triton_kernels(module: str) -> list[str]:
    """Names of the Pallas kernels in the module's Triton custom calls, in order."""
    calls = re.findall(r"custom_call @([\w$.]+)\((.*)", module)
    assert calls, "no custom call in the exported module: the kernel fell back to XLA"
    assert {t for t, _ in calls} <= set(TRITON_TARGETS), calls
    return re.findall(r'name = "(dlkit_flash_\w+)"', module)


@pytest.mark.parametrize(
    "seq, head_dim, causal",
    [
        (4096, 64, False),
        (4096, 64, True),
        (4096, 128, False),
        (4096, 128, True),
        (16384, 128, True),
    ],
)
def test_flash_attention_exports_for_cuda_forward_and_backward(seq, head_dim, causal):
    q = jax.ShapeDtypeStruct((2, seq, 16, head_dim), jnp.bfloat16)  # (B, S, H, D)
    kv = jax.ShapeDtypeStruct((2, seq, 4, head_dim), jnp.bfloat16)  # (B, S, Hkv, D): GQA 4:1
    ids = jax.ShapeDtypeStruct((2, seq), jnp.int32)  # (B, S) segment ids

    def attend(q, k, v, ids):  # interpret=False: the Triton path a GPU runs, whatever the backend
        return flash_attention(q, k, v, causal=causal, segment_ids=ids, interpret=False)

    def loss(q, k, v, ids):
        return jnp.sum(attend(q, k, v, ids).astype(jnp.float32))

    forward = _export_cuda(attend, q, kv, kv, ids)
    assert _triton_kernels(forward) == ["dlkit_flash_fwd"]
    assert f"tensor<2x{seq}x16x{head_dim}xbf16>" in forward
    backward = _export_cuda(jax.grad(loss, argnums=(0, 1, 2)), q, kv, kv, ids)
    assert sorted(_triton_kernels(backward)) == [
        "dlkit_flash_dkv",
        "dlkit_flash_dq",
        "dlkit_flash_fwd",
    ]
