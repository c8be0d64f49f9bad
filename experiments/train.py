"""Trains any registered model on any registered dataset; rerun with the same workdir to resume.

  python experiments/train.py --config=experiments/configs/mlp_digits.py --workdir=workdirs/mlp
  python experiments/train.py --config=experiments/configs/mlp_mnist.py \
      --config.optimizer.learning_rate=0.001 --workdir=workdirs/mnist
"""

import pathlib
import time

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "mlp_digits.py"
_CONFIG = config_flags.DEFINE_config_file(  # default filled in by cli.run, before flag parsing
    "config",
    None,
    f"Experiment config file (get_config()); default {_DEFAULT_CONFIG}.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Checkpoints, metrics and TensorBoard events go here (default: "
    "workdirs/<config name>). Rerunning with the same workdir resumes.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-host: host:port of process 0's coordinator (jax.distributed); same on every process. "
    "Without it, SLURM / Open MPI / JAX_COORDINATOR_ADDRESS environments are detected.",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's id, 0..N-1.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
    from dlkit import cli, platform
    from dlkit.train import train_and_evaluate
    from dlkit.train.config import validate

    config_name = pathlib.Path(flags.FLAGS["config"].config_filename).stem
    workdir = _WORKDIR.value or str(pathlib.Path("workdirs") / config_name)
    config = cli.config_value(_CONFIG)
    for flag, key in [
        (_COORDINATOR, "coordinator_address"),
        (_NUM_PROCESSES, "num_processes"),
        (_PROCESS_ID, "process_id"),
    ]:
        if flag.value is not None:
            config.parallel[key] = flag.value
    options = validate(config)  # the door: every section parsed, checked and defaulted once
    cli.writable_workdir(workdir)
    # before JAX starts: the host set-up (CPU backend only; a JAX CPU device per core under
    # parallel.cpu_devices 0, auto: the loop decides how many the run uses), printed once
    host = platform.configure(options.parallel.cpu_devices)
    print(f"dlkit platform: {host.describe()}", flush=True)
    start = time.perf_counter()
    metrics = train_and_evaluate(options, workdir)  # errors: one line each, via dlkit.cli.run
    import jax

    if jax.process_index() != 0:  # multi-host: only process 0 reports
        return
    print(
        "final: "
        + " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
        )
        + f" wall_seconds={time.perf_counter() - start:.1f}"
    )


if __name__ == "__main__":
    from dlkit import cli

    cli.run(main, defaults={"--config": _DEFAULT_CONFIG})
