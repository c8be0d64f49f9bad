"""The library has no process-wide side effects: in a fresh process, `import dlkit`, a
make_steps step and a short train_and_evaluate run leave os.environ, the device count and the
allocator as they were, never load dlkit.platform (only a door calls it), and print nothing:
train_and_evaluate's progress lines are logged on the "dlkit" logger, which only a door
(dlkit.cli.show_progress) turns into printed lines."""

import json
import os
import subprocess
import sys

SCRIPT = r"""
import contextlib, ctypes, io, json, os, sys, tempfile
opened, real_cdll = [], ctypes.CDLL

def spy(name, *args, **kwargs):  # mallopt goes through ctypes.CDLL("libc.so.6")
    opened.append(str(name))
    return real_cdll(name, *args, **kwargs)

ctypes.CDLL = spy
import grain, sklearn, tensorflow_datasets  # noqa: their own env writes at import
before = dict(os.environ)  # from here on, only dlkit's code runs
steps_out, train_out, train_err = io.StringIO(), io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(steps_out):
    import dlkit
    import jax, numpy as np
    from dlkit import models
    from dlkit.train import create_train_state, make_optimizer, make_steps, objectives
    from dlkit.train.config import default_config

    c = default_config()
    model = models.get("mlp", num_classes=10, hidden_sizes=(16,))
    x = np.zeros((4, 8, 8, 1), np.float32)
    state = create_train_state(model, make_optimizer(c.optimizer, 10), x, 0)
    train, _ = make_steps(objectives.get("cross_entropy"))
    state, sums = train(state, {"inputs": x, "targets": np.zeros(4, np.int32)})
    jax.block_until_ready(sums)
c.model.name, c.model.hidden_sizes, c.data.name = "mlp", (16,), "digits"
c.update(batch_size=32, eval_batch_size=100, num_train_steps=4, log_every_steps=2)
c.update(eval_every_steps=4, progress_bar=False)
c.checkpoint.every_steps = 4
with contextlib.redirect_stdout(io.StringIO()):  # TFDS says when it first prepares the data
    from dlkit import data
    from dlkit.train.config import validate

    data.load(validate(c).data)
with contextlib.redirect_stdout(train_out), contextlib.redirect_stderr(train_err):
    from dlkit.train import train_and_evaluate

    metrics = train_and_evaluate(c, tempfile.mkdtemp())
print(json.dumps({
    "steps_out": steps_out.getvalue(),
    "train_out": train_out.getvalue(),
    "train_err": train_err.getvalue(),
    "environ_changed": sorted(k for k in {**before, **os.environ}
                              if before.get(k) != os.environ.get(k)),
    "devices": len(jax.devices()),
    "num_cpu_devices": jax.config.jax_num_cpu_devices,
    "platform_loaded": "dlkit.platform" in sys.modules,
    "libc_opened": [n for n in opened if "libc" in n],
    "step": metrics["step"],
}))
"""


def test_library_calls_leave_the_process_as_they_found_it():
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.stdout.strip().splitlines()[:-1] == []  # nothing escaped the redirects
    assert got["steps_out"] == ""  # import dlkit, make_steps and a step print nothing
    assert got["train_out"] == "" and got["step"] == 4  # train_and_evaluate prints nothing
    assert got["train_err"] == ""  # nor warns on stderr
    assert got["environ_changed"] == [], got["environ_changed"]
    assert got["devices"] == 1 and got["num_cpu_devices"] == -1
    assert not got["platform_loaded"] and got["libc_opened"] == []
