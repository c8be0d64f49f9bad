"""The native CPU kernels never read memory they did not write: every kernel's outputs and
gradients are bitwise equal in two processes whose malloc fills each fresh block with different
bytes (glibc's MALLOC_PERTURB_), with the door's set-up (keep-arena: large blocks come from the
heap too). A read of uninitialized memory would make results depend on what the heap held before,
which varies with load and thread timing: a silent break of bitwise resume."""

import platform

import pytest
from fresh_process import run_python

from dlkit.kernels import cpu

needs_kernel = pytest.mark.skipif(
    not cpu.available(), reason=f"native kernels unavailable: {cpu.why_unavailable()}"
)

CASE = r"""
import hashlib
from dlkit import platform
platform.configure(split=False)  # the door: keep-arena, one device
import jax, jax.numpy as jnp, numpy as np
from dlkit.kernels.cpu import dispatch

rng = np.random.default_rng(0)
r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)

def digest(f, *args):
    value, grads = jax.jit(jax.value_and_grad(lambda a: jnp.sum(jnp.sin(f(*a))), 0))(args)
    h = hashlib.sha256(np.asarray(value).tobytes())
    for g in jax.tree.leaves(grads):
        h.update(np.asarray(g).tobytes())
    return h.hexdigest()[:16]

pads = ((0, 1), (2, 1))
cases = {
    "conv": digest(lambda x, w, b: dispatch.conv2d(x, w, 2, pads, b, True),
                   r(4, 9, 9, 5), r(3, 3, 5, 7), r(7)),
    "conv1x1": digest(lambda x, w: dispatch.conv2d(x, w, 1, "VALID"),
                      r(2, 6, 6, 16), r(1, 1, 16, 8)),
    "lstm": digest(lambda xs, c, w, b: dispatch.lstm_stack(xs, c, w, b)[1],
                   r(6, 4, 5), ((r(4, 8), r(4, 8)), (r(4, 8), r(4, 8))),
                   (r(13, 32), r(16, 32)), (r(32), r(32))),
    "batch_norm": digest(lambda x, s, b, res: dispatch.batch_norm(x, s, b, 1e-5, True, res)[0],
                         r(8, 5, 5, 12), r(12), r(12), r(8, 5, 5, 12)),
    "attention": digest(lambda q, k, v: dispatch.attention(q, k, v, causal=True),
                        r(2, 70, 4, 8), r(2, 70, 2, 8), r(2, 70, 2, 8)),
}
control = hashlib.sha256(np.empty(1 << 20, np.uint8).tobytes()).hexdigest()[:16]
print(" ".join(f"{k}={v}" for k, v in cases.items()), f"control={control}")
"""


@needs_kernel
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_PERTURB_ is glibc's")
def test_kernels_read_no_uninitialized_memory():
    runs = [
        dict(kv.split("=") for kv in run_python(["-c", CASE], MALLOC_PERTURB_=b).stdout.split())
        for b in ("85", "170")
    ]
    # the control (np.empty's bytes) proves the two heaps were filled differently
    assert runs[0].pop("control") != runs[1].pop("control")
    assert runs[0] == runs[1] and len(runs[0]) == 5
