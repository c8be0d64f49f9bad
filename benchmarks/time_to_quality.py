"""Time to quality on this machine: the issue-15 goals, each run as a user runs it.

    JAX_PLATFORMS=cpu python benchmarks/time_to_quality.py [--runs mlp_digits,cnn_mnist,...]
        [--budget_s 300] [--workdir /tmp/dlkit_ttq] [--smoke (mlp_digits, 20 steps: CI)]

Runs (fresh workdirs; every run is the shipped config through experiments/train.py, defaults only):
- mlp_digits: eval accuracy >= 0.96 in < 60 s (the binary's wall_seconds, imports excluded)
- cnn_mnist: eval accuracy >= 0.985 on the 2,000 held-out MNIST images
- char_lstm: held-out loss <= 1.50 nats/char in <= 600 s
- resnet_mnist32: resnet18 (CIFAR stem) on MNIST in CIFAR's shape (32x32x3), eval accuracy
  >= 0.985; resnet_mnist32_xla: the same run with XLA's convs and batch norm (model.impl=fast,
  model.norm_impl=reference), the time the native kernels save
- compare: experiments/compare_lm.py, transformer_lm_shakespeare vs char_lstm_shakespeare at an
  equal wall-clock budget (--budget_s each, dropout 0): the transformer's held-out loss lower
Prints the machine line, one markdown row per run (command, result, wall, goal met) and writes a
JSON record to benchmarks/results/time_to_quality-<cpu>-<date>.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

TRAIN = [sys.executable, str(ROOT / "experiments/train.py")]
XLA_CONVS = ("--config.model.impl=fast", "--config.model.norm_impl=reference")
RUNS = {  # name: (config, metric, op, target, seconds, overrides)
    "mlp_digits": ("mlp_digits", "eval_accuracy", ">=", 0.96, 60.0, ()),
    "cnn_mnist": ("cnn_mnist", "eval_accuracy", ">=", 0.985, None, ()),
    "char_lstm": ("char_lstm_shakespeare", "eval_loss", "<=", 1.50, 600.0, ()),
    "resnet_mnist32": ("resnet18_mnist32", "eval_accuracy", ">=", 0.985, None, ()),
    "resnet_mnist32_xla": ("resnet18_mnist32", "eval_accuracy", ">=", 0.985, None, XLA_CONVS),
}


def final_metrics(stdout: str) -> dict:
    """The binary's `final: k=v ...` line as floats."""
    line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith("final:"))
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.e+]+)", line)}


def failed(name: str, command: str, out) -> dict:
    """A run whose process failed: its last stderr line as the result (the other runs go on)."""
    last = (out.stderr.strip().splitlines() or ["(no stderr)"])[-1]
    result = f"failed (exit {out.returncode}): {last}"
    return {"run": name, "command": command, "result": result, "wall_s": None, "met": False,
            "failed": True}  # fmt: skip


def train_run(name: str, workdir: pathlib.Path, extra=()) -> dict:
    config, metric, op, target, seconds, overrides = RUNS[name]
    args = [f"--config={ROOT / 'experiments/configs' / f'{config}.py'}", f"--workdir={workdir}"]
    args += ["--config.progress_bar=False", *overrides, *extra]
    start = time.perf_counter()
    out = subprocess.run([*TRAIN, *args], capture_output=True, text=True)
    process_s = time.perf_counter() - start
    goal = f"{metric} {op} {target}" + (f" in < {seconds:.0f} s" if seconds else "")
    command = " ".join(
        ["python experiments/train.py", f"--config=experiments/configs/{config}.py", *overrides]
    )
    if out.returncode:
        return {**failed(name, command, out), "goal": goal}
    m = final_metrics(out.stdout)
    value, wall = m[metric], m["wall_seconds"]
    ok = (value >= target if op == ">=" else value <= target) and (
        seconds is None or wall < seconds
    )
    return {
        "run": name,
        "command": command,
        "result": f"{metric} {value:.4g} at step {m['step']:.0f}",
        "wall_s": wall,
        "process_s": process_s,
        "goal": goal,
        "met": ok,
        "layout": [ln for ln in out.stdout.splitlines() if ln.startswith("dlkit CPU layout")],
    }


def compare_run(workdir: pathlib.Path, budget: float) -> dict:
    args = [
        sys.executable,
        str(ROOT / "experiments/compare_lm.py"),
        "--configs=transformer_lm_shakespeare,char_lstm_shakespeare",
        f"--budget_seconds={budget:g}",
        "--set=model.dropout_rate=0.0",
        f"--workdir={workdir}",
    ]
    out = subprocess.run(args, capture_output=True, text=True)
    command = " ".join(["python", *args[1:]]).replace(str(ROOT) + "/", "")
    goal = "transformer lower at equal wall-clock"
    if out.returncode:
        return {**failed("transformer vs char_lstm", command, out), "goal": goal}
    rows = [ln for ln in out.stdout.splitlines() if ln.startswith("| ") and "shakespeare" in ln]
    losses = {r.split("|")[1].strip(): float(r.split("|")[7]) for r in rows[-2:]}
    walls = {r.split("|")[1].strip(): float(r.split("|")[6]) for r in rows[-2:]}
    tlm, lstm = losses["transformer_lm_shakespeare"], losses["char_lstm_shakespeare"]
    return {
        "run": "transformer vs char_lstm",
        "command": command,
        "result": f"held-out nats/char: transformer {tlm:.4f}, LSTM {lstm:.4f}",
        "wall_s": walls["transformer_lm_shakespeare"],
        "lstm_wall_s": walls["char_lstm_shakespeare"],
        "goal": goal,
        "met": tlm < lstm,
        "table": "\n".join(rows[-2:]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="mlp_digits,cnn_mnist,char_lstm,compare")
    parser.add_argument("--budget_s", type=float, default=300.0, help="compare: seconds each")
    parser.add_argument("--workdir", default="/tmp/dlkit_ttq")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    parser.add_argument("--smoke", action="store_true", help="the binary runs: 20 steps (CI)")
    args = parser.parse_args()
    smoke = [f"--config.{k}=20" for k in ("num_train_steps", "eval_every_steps")] * args.smoke
    if args.smoke and args.runs == parser.get_default("runs"):
        args.runs = "mlp_digits"
    from dlkit.extras.profile import machine, results_name

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = pathlib.Path(args.workdir) / stamp
    info = machine()
    print(f"CPU: {info['model']}, {info['cpus_usable']} CPUs, load {info['loadavg'][0]:.1f}, "
          f"jax {info['jax']}, python {info['python']}", flush=True)  # fmt: skip
    records, names = [], [n.strip() for n in args.runs.split(",") if n.strip()]
    if unknown := [n for n in names if n not in (*RUNS, "compare")]:
        raise SystemExit(f"unknown run {unknown[0]!r}; choose from {', '.join([*RUNS, 'compare'])}")
    for name in names:
        load = os.getloadavg()[0]
        if name == "compare":
            rec = compare_run(root / "compare", args.budget_s)
        else:
            rec = train_run(name, root / name, smoke)
        rec["load"] = max(load, os.getloadavg()[0])
        records.append(rec)
        wall = "-" if rec["wall_s"] is None else f"{rec['wall_s']:.1f} s"
        print(f"| {rec['run']} | `{rec['command']}` | {rec['result']} | {wall} "
              f"| {rec['goal']}: {'met' if rec['met'] else 'NOT met'} | {rec['load']:.1f} |",
              flush=True)  # fmt: skip
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / results_name("time_to_quality", info, stamp)
    path.write_text(json.dumps({"machine": info, "runs": records}, indent=1))
    print(f"wrote {path}")
    if bad := [r["run"] for r in records if r.get("failed")]:
        raise SystemExit(f"failed: {', '.join(bad)} (their stderr's last line is in the table)")


if __name__ == "__main__":
    main()
