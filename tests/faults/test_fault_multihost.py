"""Two processes (jax.distributed on 127.0.0.1): a signal to one of them stops both at the same
step, each saving its part of that step. Run as a script, this file is one of those processes."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_signal_to_one_process_stops_both_at_one_step(tmp_path, tfds_data_dir):
    from dlkit import data
    from dlkit.train import Checkpointer
    from dlkit.train.config import default_config

    data.load(default_config().data)  # prepare the TFDS files before two processes open them
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TFDS_DATA_DIR": str(tfds_data_dir)}
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE), str(i), str(port), str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 75, out[-2000:]
    steps = [out.split("preempted at step ")[1].split()[0] for out in outs]
    assert steps[0] == steps[1]
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_step() == int(steps[0])
    ckpt.close()


def main(process_id: int, port: int, workdir: str):
    from fault_utils import tiny_config

    from dlkit.errors import Preempted
    from dlkit.train import train_and_evaluate
    from dlkit.train.runner import Runner

    config = tiny_config(num_train_steps=200)
    config.parallel.coordinator_address = f"127.0.0.1:{port}"
    config.parallel.num_processes, config.parallel.process_id = 2, process_id
    real, calls = Runner.train, [0]

    def train(self, state, batches):  # process 1 alone gets SIGTERM after its 3rd dispatch
        out = real(self, state, batches)
        calls[0] += 1
        if process_id == 1 and calls[0] == 3:
            signal.raise_signal(signal.SIGTERM)
        return out

    Runner.train = train
    try:
        train_and_evaluate(config, workdir)
    except Preempted as e:
        print(f"process {process_id} preempted at step {e.step}", flush=True)
        raise SystemExit(75) from None


if __name__ == "__main__":  # a process of the test (its folder is on sys.path as a script's)
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
