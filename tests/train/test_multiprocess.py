"""Two processes on 127.0.0.1 (jax.distributed, 2 CPU devices each) train, save, and resume;
the result matches a single-process run. Run as a script, this file is one of those processes."""

import json
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
from fresh_process import cpu_env

from dlkit import cli, data
from dlkit.train import restore_latest, train_and_evaluate
from dlkit.train.config import default_config

HERE = pathlib.Path(__file__).resolve()


def tiny_config(**parallel):
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (16,)
    c.data.name = "digits"
    c.batch_size = 16
    c.eval_batch_size = 200
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.eval_every_steps = 6
    c.checkpoint_every_steps = 3
    c.progress_bar = False
    for k, v in parallel.items():
        c.parallel[k] = v
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_pair(workdir, stop: int, tfds_dir) -> list[str]:
    """Runs this file as processes 0 and 1 of one job; returns their stdouts."""
    env = cpu_env(devices=2, TFDS_DATA_DIR=str(tfds_dir))
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE), str(i), str(port), str(workdir), str(stop)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return outs


def test_two_processes_train_save_resume_match_one(tmp_path, tfds_data_dir):
    data.load(tiny_config().data)  # prepare the TFDS files once, before two processes open them
    work = tmp_path / "two"
    first = launch_pair(work, 3, tfds_data_dir)  # steps 1-3, saved by both processes
    assert "Stopped at step 3" in first[0] and "Stopped" not in first[1]  # only process 0 logs
    second = launch_pair(work, 6, tfds_data_dir)
    assert "Resuming from the checkpoint at step 3" in second[0]
    assert (work / "metrics.jsonl").exists()

    ref = tmp_path / "one"
    m_one = train_and_evaluate(tiny_config(kind="none"), ref)
    a, b = restore_latest(ref, items=("state",)), restore_latest(work, items=("state",))
    assert a["step"] == b["step"] == 6
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
    lines = [json.loads(ln) for ln in (work / "metrics.jsonl").read_text().splitlines()]
    evals = [ln for ln in lines if "eval_loss" in ln]
    assert [ln["step"] for ln in evals] == [6]  # process 0 wrote once per step, no duplicates
    np.testing.assert_allclose(evals[0]["eval_loss"], m_one["eval_loss"], rtol=1e-5)


def main(process_id: int, port: int, workdir: str, stop: int):
    config = tiny_config(
        coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id
    )
    train_and_evaluate(config, workdir, stop_after_step=stop)
    assert jax.process_count() == 2 and jax.device_count() == 4


if __name__ == "__main__":  # a door: dlkit's progress lines print, as in a binary
    cli.show_progress()
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
