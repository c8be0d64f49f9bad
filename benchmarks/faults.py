"""Fault injection on mlp_digits: signals at random moments, damaged checkpoints, two runs at
once, a NaN, a full disk; every trial reruns until done and is checked against one
uninterrupted run (final params bitwise, metrics.jsonl strict JSON, no repeated step).

  JAX_PLATFORMS=cpu python benchmarks/faults.py --trials 20 [--seed 0]
  JAX_PLATFORMS=cpu python benchmarks/faults.py --step-cost   # the non-finite flag's cost
  JAX_PLATFORMS=cpu python benchmarks/faults.py --damage-matrix   # every file x 3 damages
  JAX_PLATFORMS=cpu python benchmarks/faults.py --smoke --kinds nan --trials 1   # CI: seconds

Run with `child WORKDIR NAN_AT`, this file is a training process whose NAN_AT-th batch holds a
NaN (the fault the binary cannot inject), with the binary's exit codes (dlkit.cli.guard).
"""

import argparse
import errno
import functools
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ROOT / "experiments" / "train.py"
SMOKE = "--smoke" in sys.argv  # a tiny run (CI's smoke test); the NaN trial's child gets it too
STEPS, LOG, CKPT, EVAL = (20, 5, 10, 10) if SMOKE else (300, 10, 50, 150)
FLAGS = (
    f"--config={ROOT / 'experiments' / 'configs' / 'mlp_digits.py'}",
    f"--config.num_train_steps={STEPS}",
    f"--config.log_every_steps={LOG}",
    f"--config.eval_every_steps={EVAL}",
    f"--config.checkpoint.every_steps={CKPT}",
    "--config.progress_bar=False",
)
KINDS = ("sigterm", "sigint", "sigusr1", "sigkill", "save", "damage", "two", "nan", "disk")


def start(workdir, *extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(TRAIN), f"--workdir={workdir}", *FLAGS, *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err.strip().splitlines()


def rows(workdir) -> list[dict]:
    """metrics.jsonl, strict JSON; raises on NaN/Infinity or a repeated (step, key)."""
    out, seen = [], set()
    path = pathlib.Path(workdir) / "metrics.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        keys = {(row["step"], k) for k in row if k != "step"}
        if keys & seen:
            raise ValueError(f"step {row['step']} repeated in metrics.jsonl")
        seen |= keys
        out.append({k: v for k, v in row.items() if k != "steps_per_sec"})
    return out


def tb_repeats(workdir) -> int:
    from dlkit.train.metrics import read_tensorboard

    keys = [(s, t) for s, t, _ in read_tensorboard(workdir)]
    return len(keys) - len(set(keys))


def state_digest(workdir):
    from dlkit.train import restore_latest
    from dlkit.train.checkpoint import digest

    restored = restore_latest(workdir, items=("state",))
    return restored["step"], digest(restored["state"])


def latest(workdir):
    steps = [
        int(p.name) for p in (pathlib.Path(workdir) / "checkpoints").glob("*") if p.name.isdigit()
    ]
    return max(steps, default=None)


def rerun(workdir, limit=3):
    """Reruns the same command until it finishes; (runs, last stderr)."""
    for n in range(1, limit + 1):
        rc, _, err = finish(start(workdir))
        if rc == 0:
            return n, err
    raise AssertionError(f"rerun did not finish: {err[-3:]}")


def wait_for_line(proc, prefix: str) -> bool:
    for line in proc.stdout:
        if line.startswith(prefix):
            return True
    return False


def signal_trial(workdir, rng, sig, wall):
    """A signal at a random moment; 75 with one line and zero steps lost, or done before it."""
    proc = start(workdir)
    time.sleep(rng.uniform(0.0, wall))
    proc.send_signal(sig)
    rc, out, err = finish(proc)
    lost = 0
    if rc == 75:
        assert len(err) == 1 and "Preempted at step" in err[0], err
        step = int(err[0].split("Preempted at step ")[1].split(";")[0])
        lost = step - (latest(workdir) or 0)
    elif rc != 0:  # before the handlers were installed: nothing trained yet
        assert "step " not in out and latest(workdir) is None, (rc, err[-3:])
    return {"rc": rc, "lost": lost, "message": err[-1] if err else ""}


def kill_trial(workdir, rng, wall):
    """SIGKILL at a random moment: no message possible; the rerun redoes steps since the save."""
    proc = start(workdir)
    time.sleep(rng.uniform(0.0, wall))
    proc.kill()
    rc, out, _ = finish(proc)
    logged = [int(ln.split()[1][:-1]) for ln in out.splitlines() if ln.startswith("step ")]
    redone = max(logged, default=0) - (latest(workdir) or 0)
    return {"rc": rc, "lost": 0, "redone_after_sigkill": max(redone, 0)}


def save_trial(workdir, rng):
    """SIGTERM or SIGKILL right after a checkpoint step is logged: during its async save."""
    proc = start(workdir)
    at = rng.choice(range(CKPT, STEPS, CKPT))
    wait_for_line(proc, f"step {at}:")
    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
    proc.send_signal(sig)
    rc, _, err = finish(proc)
    lost = 0
    if sig == signal.SIGTERM:
        assert rc == 75 and len(err) == 1, (rc, err)
        lost = int(err[0].split("Preempted at step ")[1].split(";")[0]) - latest(workdir)
    return {"rc": rc, "lost": lost, "at": at, "signal": signal.Signals(sig).name}


def damage_trial(workdir, rng):
    """A finished run's newest checkpoint truncated, deleted or garbled; the rerun redoes it."""
    assert finish(start(workdir))[0] == 0
    newest = pathlib.Path(workdir) / "checkpoints" / str(latest(workdir))
    files = sorted(p for p in newest.rglob("*") if p.is_file() and p.stat().st_size > 0)
    victim, how = rng.choice(files), rng.choice(["truncate", "delete", "garble"])
    raw = bytearray(victim.read_bytes())
    if how == "delete":
        victim.unlink()
    elif how == "truncate":
        victim.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        victim.write_bytes(bytes(raw))
    _, err = rerun(workdir)
    note = next((ln for ln in err if "damaged" in ln), "")
    return {
        "rc": 0,
        "lost": 0,
        "how": how,
        "file": str(victim.relative_to(newest)),
        "message": note,
    }


def two_trial(workdir):
    """Two runs started at once: one trains, the other is refused with one line."""
    a, b = start(workdir), start(workdir)
    (ra, _, ea), (rb, _, eb) = finish(a), finish(b)
    assert sorted([ra, rb]) == [0, 1], (ra, rb, ea[-2:], eb[-2:])
    refused = ea if ra == 1 else eb
    assert len(refused) == 1 and "is in use by a running training (pid" in refused[0], refused
    return {"rc": 1, "lost": 0, "message": refused[0]}


def nan_trial(workdir, rng):
    """A NaN batch: exit 1 naming the step, no non-finite checkpoint; the rerun ends equal."""
    at = rng.randrange(2, STEPS)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, __file__, "child", str(workdir), str(at), *["--smoke"] * SMOKE]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, (done.returncode, err[-3:])
    assert f"non-finite loss or gradients at step {at};" in err[0], err
    saved = latest(workdir)
    assert saved is None or saved < at
    lost = (at - 1) // CKPT * CKPT - (saved or 0)  # finite checkpoints that should exist
    return {"rc": 1, "lost": lost, "at": at, "message": err[0]}


def disk_trial(workdir, rng):
    """The disk fills after the first checkpoint: one line, exit 1, older checkpoints intact."""
    disk = pathlib.Path(workdir).parent / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)]).returncode:
        return {"skipped": "cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)"}
    try:
        work = disk / "w"
        proc = start(work)
        wait_for_line(proc, f"step {CKPT + LOG}:")
        fill(disk)
        rc, _, err = finish(proc)
        assert rc == 1 and len(err) == 1 and ("full" in err[0] or "space" in err[0]), (rc, err)
        kept = latest(work)
        (disk / "filler").unlink()
        rerun(work)
        shutil.copytree(work, workdir)
    finally:
        subprocess.run(["umount", "-l", str(disk)])
    return {"rc": rc, "lost": 0, "kept": kept, "message": err[0]}


def fill(disk):
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def trial(kind, workdir, rng, wall):
    sigs = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigusr1": signal.SIGUSR1}
    if kind in sigs:
        return signal_trial(workdir, rng, sigs[kind], wall)
    if kind == "sigkill":
        return kill_trial(workdir, rng, wall)
    if kind == "save":
        return save_trial(workdir, rng)
    if kind == "damage":
        return damage_trial(workdir, rng)
    if kind == "two":
        return two_trial(workdir)
    if kind == "nan":
        return nan_trial(workdir, rng)
    return disk_trial(workdir, rng)


def check(workdir, reference) -> dict:
    """Reruns to the end; whether the result equals the uninterrupted run's, bit for bit."""
    reruns = 0 if latest(workdir) == STEPS else rerun(workdir)[0]
    same = state_digest(workdir) == reference["digest"] and rows(workdir) == reference["rows"]
    return {"reruns": reruns, "equal": same, "tb_repeats": tb_repeats(workdir)}


def machine() -> str:
    import jax

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    load, py = os.getloadavg()[0], platform.python_version()
    return f"{cpu}, {os.cpu_count()} cores, load {load:.1f}, Python {py}, jax {jax.__version__}"


def step_cost(rounds: int = 300) -> None:
    """mlp_digits step: flag dropped (XLA removes it: the old step) vs stop vs skip_step."""
    import jax
    import numpy as np

    from dlkit import data
    from dlkit.extras.configs import get_config
    from dlkit.extras.profile import time_round_robin
    from dlkit.train import objectives
    from dlkit.train.build import build_model, create_state
    from dlkit.train.step import StepOptions, train_step

    config = get_config(ROOT / "experiments" / "configs" / "mlp_digits.py")
    dataset = data.load(config.data)
    state0 = create_state(config, dataset, build_model(config, dataset))
    batch = jax.tree.map(jax.numpy.asarray, dataset.example_batch(config.batch_size))
    obj = objectives.get(config.loss)

    def make(policy, drop):
        opts = StepOptions(nonfinite=policy)

        def fn(s, b):
            new, sums = train_step(s, b, objective=obj, options=opts)
            return new, {k: v for k, v in sums.items() if not (drop and k == "nonfinite")}

        return jax.jit(fn)

    fns = {
        "before": make("stop", True),
        "stop": make("stop", False),
        "skip": make("skip_step", False),
    }
    finals = {}
    for name, fn in fns.items():
        s = state0
        for _ in range(20):
            s, _ = fn(s, batch)
        finals[name] = [np.asarray(x) for x in jax.tree.leaves(s.params)]
    same = all(
        all(np.array_equal(a, b) for a, b in zip(finals["before"], finals[k], strict=True))
        for k in ("stop", "skip")
    )
    boxes = {name: [state0] for name in fns}

    def runner(name):
        def run():
            boxes[name][0] = jax.block_until_ready(fns[name](boxes[name][0], batch))[0]

        return run

    times = time_round_robin({n: runner(n) for n in fns}, rounds)
    base = times["before"][0]
    print(f"machine: {machine()}")
    print(f"params after 20 steps bitwise equal to the step without the flag: {same}")
    for name, (wall, _) in times.items():
        print(f"{name}: {wall * 1e6:.1f} us/step median wall, {wall / base:.3f} x before")


def damage_matrix() -> None:
    """Truncates, deletes and bit-flips each file of the newest checkpoint in turn (in-process)."""
    import contextlib
    import io

    from dlkit.train import train_and_evaluate
    from dlkit.train.config import default_config

    c = default_config()
    c.model.hidden_sizes, c.batch_size, c.num_train_steps = (16,), 32, 40
    c.log_every_steps, c.eval_every_steps, c.checkpoint.every_steps = 20, 40, 20
    c.progress_bar = False
    root = pathlib.Path(tempfile.mkdtemp(prefix="dlkit_damage_"))
    quiet = contextlib.ExitStack()
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    with quiet:
        train_and_evaluate(c, root / "src")
    src, counts = root / "src" / "checkpoints" / "40", {}
    for rel in sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file()):
        for how in ("truncate", "delete", "garble"):
            work = root / "w"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(root / "src", work)
            victim, raw = work / "checkpoints" / "40" / rel, bytearray((src / rel).read_bytes())
            if how == "delete":
                victim.unlink()
            elif how == "truncate":
                victim.write_bytes(bytes(raw[: len(raw) // 2]))
            elif raw:
                raw[len(raw) // 2] ^= 0x10
                victim.write_bytes(bytes(raw))
            try:
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    train_and_evaluate(c, work)
                aside = (work / "checkpoints" / "damaged" / "40").exists()
                result = (
                    "set aside, step 20 restored" if aside else "step 40 restored, CRC-32 equal"
                )
            except Exception as e:
                result = f"error {type(e).__name__}"
            counts[result] = counts.get(result, 0) + 1
            print(f"{rel} {how}: {result}", flush=True)
    print(f"machine: {machine()}")
    print(f"{sum(counts.values())} cases: {counts}")
    shutil.rmtree(root, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=len(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--step-cost", action="store_true", help="time the non-finite flag")
    parser.add_argument("--damage-matrix", action="store_true", help="damage every file in turn")
    parser.add_argument("--smoke", action="store_true", help=f"{STEPS}-step runs (a CI check)")
    args = parser.parse_args()
    if args.step_cost:
        return step_cost()
    if args.damage_matrix:
        return damage_matrix()
    rng, kinds = random.Random(args.seed), args.kinds.split(",")
    root = pathlib.Path(tempfile.mkdtemp(prefix="dlkit_faults_"))
    t = time.perf_counter()
    assert finish(start(root / "reference"))[0] == 0
    wall = time.perf_counter() - t
    reference = {"digest": state_digest(root / "reference"), "rows": rows(root / "reference")}
    results = []
    for i in range(args.trials):
        kind = kinds[i % len(kinds)]
        workdir = root / f"trial{i}" / "w"
        workdir.parent.mkdir()
        try:
            result = {"kind": kind, **trial(kind, workdir, rng, wall)}
            if "skipped" not in result:
                result.update(check(workdir, reference))
        except Exception as e:  # a failed check is a figure, not a crash
            result = {"kind": kind, "failed": f"{type(e).__name__}: {e}"[:300]}
        results.append(result)
        print(json.dumps(result), flush=True)
    summarize(results, wall, args)
    shutil.rmtree(root, ignore_errors=True)


def summarize(results, wall, args):
    ran = [r for r in results if "skipped" not in r]
    ok = [r for r in ran if "failed" not in r and r["equal"] and not r["tb_repeats"]]
    print(f"machine: {machine()}")
    print(
        f"uninterrupted run: {wall:.1f} s wall; trials {len(results)} (seed {args.seed}), "
        f"skipped {len(results) - len(ran)}"
    )
    print(
        f"faults survived: {len(ok)}/{len(ran)}; steps lost: {sum(r.get('lost', 0) for r in ran)}; "
        f"divergences from the uninterrupted result: {sum(1 for r in ran if not r.get('equal'))}; "
        f"steps redone after SIGKILL: {sum(r.get('redone_after_sigkill', 0) for r in ran)}"
    )


def child(workdir: str, nan_at: int):
    """A training process whose nan_at-th batch holds NaN inputs (benchmark's NaN trial)."""
    import numpy as np

    from dlkit import cli, data
    from dlkit.extras.configs import get_config
    from dlkit.train import train_and_evaluate

    config = get_config(ROOT / "experiments" / "configs" / "mlp_digits.py")
    for flag in FLAGS[1:]:  # --config.checkpoint.every_steps=50: a field of a section
        key, value = flag[len("--config.") :].split("=")
        *sections, field = key.split(".")
        node = functools.reduce(getattr, sections, config)
        node[field] = type(node[field])(value == "True" if value in ("True", "False") else value)
    real, n = data.train_iterator, [0]

    def poisoned(*a, **k):
        it = real(*a, **k)

        class It:
            def __next__(self):
                n[0] += 1
                b = next(it)
                return {**b, "inputs": np.where(n[0] == nan_at, np.nan, b["inputs"])}

            get_state, set_state = it.get_state, it.set_state

        return It()

    data.train_iterator = poisoned
    cli.guard(train_and_evaluate, config, workdir)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
