"""The kernel behind dot_product_attention(implementation="pallas"), in a training Transformer LM,
and the prepared GPU script / benchmark in smoke mode on CPU (interpret mode)."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlkit.nn.transformer import TransformerLM
from dlkit.ops.attention import attention_reference
from dlkit.ops.attention_dispatch import dot_product_attention
from dlkit.train import create_train_state, train_step
from dlkit.train.objectives import cross_entropy

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dispatcher_reaches_the_kernel():
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.standard_normal((2, 19, 4, 16)), jnp.float32) for _ in range(3))
    k, v = k[:, :, :2], v[:, :, :2]
    seg = jnp.asarray(np.sort(r.integers(0, 3, (2, 19)), axis=1))
    kw = dict(causal=True, segment_ids=seg, kv_lengths=jnp.array([19, 11]))
    out, name = dot_product_attention(q, k, v, implementation="pallas", return_choice=True, **kw)
    assert name == "pallas"
    np.testing.assert_allclose(out, attention_reference(q, k, v, **kw), atol=2e-5)


def test_transformer_lm_trains_with_pallas():
    kw = dict(num_classes=11, embed_dim=32, num_layers=1, num_heads=2, max_len=16)
    model = TransformerLM(implementation="pallas", **kw)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 11, (4, 13)), jnp.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    state = create_train_state(model, optax.adam(1e-2), batch["inputs"], seed=0)
    xla = TransformerLM(implementation="xla", **kw).apply({"params": state.params}, batch["inputs"])
    pallas = model.apply({"params": state.params}, batch["inputs"])
    np.testing.assert_allclose(pallas, xla, atol=1e-4)
    step = jax.jit(lambda s, b: train_step(s, b, objective=cross_entropy))
    losses = []
    for _ in range(8):
        state, sums = step(state, batch)
        losses.append(float(sums["loss"] / sums["count"]))
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


def test_gpu_check_script_smoke(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), JAX_PLATFORMS="cpu", PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    checks = json.loads((tmp_path / "flash_check.json").read_text())
    assert checks and all(c["ok"] for c in checks)
    table = json.loads((tmp_path / "attention.json").read_text())
    pallas = [r for r in table["rows"] if r["impl"] == "pallas"]
    assert pallas and all(r["ms"] > 0 and r["tflops"] > 0 for r in pallas)
    assert {r["pass_"] for r in pallas} == {"fwd", "fwd+bwd"}
    assert "| S | D | causal | pass |" in (tmp_path / "attention.md").read_text()
    sweep = json.loads((tmp_path / "attention_sweep.json").read_text())
    assert sweep and all(r["launch"] and r["ms"] > 0 for r in sweep)
