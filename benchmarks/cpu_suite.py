"""CPU suite: every family's dlkit train step against PyTorch eager and torch.compile, in turn.

Each family is built from its experiment config (experiments/configs/<config>.py: model, optimizer,
batch, steps_per_call, parallel.cpu_devices) exactly as experiments/train.py trains it, through the
training loop's Runner ("dlkit" row); PyTorch runs the same network and optimizer eagerly
("torch_eager") and through torch.compile of the module ("torch_compile", compiled in the warm-up,
outside timing; a compile failure is recorded, not fatal), each PyTorch row in its own process at
PyTorch's defaults (--peer process: in one process the two share one OpenMP runtime and PyTorch's
step slows; BUILD_NOTES, "Ops by backend"), timed there. Rows of one family run round-robin (one
call of each per round) so load from other processes hits all alike; figures are medians per train
step (a K-step dispatch counts K steps). fp32 everywhere, PyTorch set to as many threads as the
process may use (XLA's default pool is that size too). Ratio = torch ms / dlkit ms (> 1: dlkit
faster). Prints the machine (CPU model, ISA flags, cores, load before and after each family,
versions, threads, allocator env, XLA_FLAGS, what dlkit.platform set up) and writes a JSON record to
benchmarks/results/cpu_suite-<cpu>-<date>.json.

With --profile, instead: per family, the train step's achieved FLOP/s against this machine's
measured matmul peak and its top XLA ops (thunks) from a jax.profiler trace (one device, one step
per call; process-CPU time, so `--threads 1` makes it robust to load); writes
benchmarks/results/cpu_profile-<cpu>-<date>.json. PyTorch twins: dlkit.convert.torch_twins;
timer: dlkit.extras.profile.time_round_robin. --smoke: tiny and seconds (CI).

    JAX_PLATFORMS=cpu python benchmarks/cpu_suite.py [--families cnn,transformer_lm]
        [--rounds 0 (auto: --budget_s per family, 5..30 rounds)] [--compile goal|all|none]
        [--threads 1] [--set step.mixed_precision=True] [--peer process|inline]
        [--platform on|off|no_malloc|no_split|async_dispatch|omp_default] [--variants xla,1dev,2dev]
        [--layers resnet18|vgg_small|transformer_lm] [--profile] [--smoke]
"""

import argparse
import collections
import datetime
import functools
import glob
import gzip
import json
import os
import pathlib
import re
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

# family -> (config file, overrides applied to it, extra dlkit rows {name: steps_per_call})
FAMILIES = {
    "mlp": ("mlp_mnist", {}, {}),
    "mlp_digits": ("mlp_digits", {}, {"dlkit_k50": 50}),
    "cnn": ("cnn_mnist", {}, {}),
    "lenet5": ("lenet_mnist", {}, {}),
    "resnet18": ("resnet18_cifar10", {"batch_size": 32}, {}),
    "vgg_small": (
        "vgg16_cifar10",
        {
            "batch_size": 32,
            "model.name": "vgg11_bn",
            "model.widths": (32, 64, 128, 256, 256),
            "model.hidden": 256,
        },
        {},
    ),
    "char_lstm": ("char_lstm_shakespeare", {}, {"dlkit_1step": 1}),
    "char_gru": ("char_gru_shakespeare", {}, {"dlkit_1step": 1}),
    "transformer_lm": ("transformer_lm_shakespeare", {}, {}),
}
COMPILE_GOAL = ("cnn", "lenet5", "resnet18", "vgg_small", "transformer_lm")
CONV_FAMILIES = ("cnn", "lenet5", "resnet18", "vgg_small")
# The families with a oneDNN path, which the --variants rows apply to, and their XLA impl.
XLA_IMPL = {**dict.fromkeys(CONV_FAMILIES, "fast"), "char_lstm": "wavefront"}
# --variants: extra dlkit row -> overrides of the family's config ("XLA": XLA_IMPL[family])
VARIANTS = {
    "xla": {"model.impl": "XLA"},  # XLA's convs (dlkit's fast path) / LSTM scan, auto layout
    "1dev": {"parallel.cpu_devices": 1},  # one device: oneDNN with every core (library path)
    "2dev": {"parallel.cpu_devices": 2},  # the batch split over 2 devices, whatever auto says
    "xla_1dev": {"model.impl": "XLA", "parallel.cpu_devices": 1},
    "xla_2dev": {"model.impl": "XLA", "parallel.cpu_devices": 2},
    "xla_bn": {"model.norm_impl": "reference"},  # BatchNorm families: XLA's batch norm
    "native_bn": {"model.norm_impl": "auto"},  # BatchNorm families: the native kernel on CPU
}
BN_FAMILIES = ("resnet18", "vgg_small")  # the families the *_bn variants apply to
# input of one example: ("image", H, W, C) | ("vector", D) | ("tokens", T, vocab)
INPUTS = {
    "mnist": ("image", 28, 28, 1),
    "cifar10": ("image", 32, 32, 3),
    "digits": ("vector", 64),
    "tiny_shakespeare": ("tokens", 128, 65),
}
SMOKE_FAMILIES, SMOKE_SETS = "lenet5", ["batch_size=8"]


def load_config(name: str, overrides: dict):
    """experiments/configs/<name>.py's get_config() with dotted-key overrides."""
    from dlkit.extras.configs import get_config

    config = get_config(ROOT / "experiments/configs" / f"{name}.py")
    for key, value in overrides.items():
        *sections, field = key.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[field] = value
    return config


def fake_batch(config, rng):
    """A batch of the config's data shape: (inputs, int targets, classes), numpy."""
    kind, *shape = INPUTS[config.data.name]
    b = config.batch_size
    if kind == "tokens":
        t, vocab = shape
        text = rng.integers(0, vocab, (b, t + 1)).astype(np.int32)
        return text[:, :-1], text[:, 1:], vocab
    x = rng.random((b, *shape), np.float32)
    return x, rng.integers(0, 10, b).astype(np.int32), 10


# ---------------------------------------------------------------- dlkit ------------------------


def dlkit_run(config, x, y, num_classes, steps_per_call: int):
    """A closure running one dispatch of steps_per_call train steps through dlkit's Runner."""
    import jax

    from dlkit.train import build_model, cpu_layout, create_train_state, make_optimizer, objectives
    from dlkit.train.options import RunOptions
    from dlkit.train.runner import Runner

    model = build_model(config, num_classes=num_classes)
    options, objective = RunOptions.from_config(config), objectives.get(config.loss)
    # as the training loop lays a run out: parallel.cpu_devices N, or 0 = auto (cpu_layout)
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    init = lambda: create_train_state(model, tx, x[:1], seed=0)  # noqa: E731
    batch = {"inputs": x, "targets": y}
    layout = cpu_layout.decide(options, objective, init, batch)
    runner = Runner.create(options, objective, devices=layout.devices)
    state = runner.place(init())
    n = runner.mesh.devices.size
    fixed = f"{n} CPU device{'s' if n > 1 else ''} (parallel.cpu_devices)"
    print(f"  ({config.model.name}: {layout.reason or fixed})")
    batches = [batch] * steps_per_call
    box = [state]

    def run():
        box[0], sums = runner.train(box[0], batches)
        jax.block_until_ready(sums["loss"])

    return run


# ---------------------------------------------------------------- torch ------------------------


def torch_net(config, num_classes):
    """The family's network in PyTorch: its twin in dlkit.convert.torch_twins, NCHW."""
    from dlkit.convert.torch_twins import twin

    kind, *shape = INPUTS[config.data.name]
    example = shape[:1] if kind == "tokens" else shape
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    return twin(config.model.name, num_classes, tuple(example), **kwargs)


def torch_optimizer(cfg, params):
    """The config's optimizer in torch.optim (constant lr: schedules cost nothing here)."""
    import torch

    lr, name = cfg.learning_rate, cfg.name
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.get("weight_decay", 1e-4))
    if name in ("sgd", "momentum", "nesterov"):
        mom = 0.0 if name == "sgd" else cfg.get("momentum", 0.9)
        return torch.optim.SGD(params, lr=lr, momentum=mom, nesterov=name == "nesterov")
    raise SystemExit(f"no torch optimizer for {name!r}")


def torch_run(config, x, y, num_classes, compiled: bool):
    """A closure running one PyTorch train step (forward, backward, clip, optimizer step)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = torch_net(config, num_classes).train()
    opt = torch_optimizer(config.optimizer, net.parameters())
    clip = config.optimizer.get("grad_clip_norm", 0.0) or 0.0
    if x.ndim == 4:  # NHWC -> NCHW
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    xb = torch.from_numpy(x if x.dtype == np.float32 else x.astype(np.int64))
    yb = torch.from_numpy(y.astype(np.int64))
    fwd = torch.compile(net) if compiled else net

    def run():
        opt.zero_grad(set_to_none=True)
        logits = fwd(xb)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        float(loss.detach())

    return run


class PeerProcess:
    """torch_run's closure in its own process (--peer process): its OpenMP runtime, threads and
    environment are PyTorch's defaults, untouched by dlkit's (in one process the two share one
    libgomp, and PyTorch's step slows beside dlkit's oneDNN teams: BUILD_NOTES, "Ops by backend").
    Each call runs one step there, timed there (profile.Timed), in turn with the other rows."""

    def __init__(self, config_name: str, overrides: dict, x, y, num_classes, compiled: bool):
        import multiprocessing

        from dlkit.extras.profile import Timed

        self.timed = Timed
        self.conn, child = multiprocessing.Pipe()
        ctx = multiprocessing.get_context("spawn")
        args = (child, config_name, overrides, x, y, num_classes, compiled)
        self.proc = ctx.Process(target=_peer_main, args=args, daemon=True)
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(PEER_ENV)  # the environment before dlkit's door set it up
        try:
            self.proc.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def __call__(self):
        self.conn.send(True)
        reply = self.conn.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"the PyTorch peer process failed: {reply}")
        return self.timed(*reply)

    def close(self):
        if self.proc.is_alive():
            self.conn.send(False)
            self.proc.join(timeout=60)


PEER_ENV = dict(os.environ)  # replaced in main() before the door changes it


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def _peer_main(conn, config_name, overrides, x, y, num_classes, compiled):
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        run = torch_run(load_config(config_name, overrides), x, y, num_classes, compiled)
    except Exception as e:  # noqa: BLE001 - reported by the parent's first call
        run, error = None, _one_line(e)
    while conn.recv():
        if run is None:
            conn.send(error)
            continue
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            conn.send((time.perf_counter() - wall, time.process_time() - cpu))
        except Exception as e:  # noqa: BLE001 - reported by the parent's call
            conn.send(_one_line(e))


def peer_run(args, config_name, overrides, x, y, num_classes, compiled):
    """The PyTorch row's closure: in its own process (--peer process) or in this one."""
    if args.peer == "process":
        return PeerProcess(config_name, overrides, x, y, num_classes, compiled)
    return torch_run(load_config(config_name, overrides), x, y, num_classes, compiled)


# ---------------------------------------------------------------- suite ------------------------


def family_rows(name, args, rng) -> tuple[dict, dict, dict, object, float]:
    """({row: closure}, {row: steps per call}, {row: error}, config, seconds to the dlkit row's
    first step done) for one family."""
    config_name, overrides, extra = FAMILIES[name]
    overrides = {**overrides, **parse_sets(args.set)}
    config = load_config(config_name, overrides)
    x, y, num_classes = fake_batch(config, rng)
    rows, per_call, errors = {}, {}, {}
    k = int(config.parallel.get("steps_per_call", 1) or 1)
    t = time.perf_counter()
    rows["dlkit"], per_call["dlkit"] = dlkit_run(config, x, y, num_classes, k), k
    rows["dlkit"]()  # the first call compiles: build + init + first step, for the record
    first_step_s = time.perf_counter() - t
    if args.threefry_ab:  # the same row traced under the other CPU threefry lowering
        from dlkit import platform

        unrolled = args.host.threefry_unrolled  # what the door did (not under --platform=off)
        platform.unroll_threefry(not unrolled)
        rows["dlkit_threefry"], per_call["dlkit_threefry"] = (
            dlkit_run(config, x, y, num_classes, k),
            k,
        )
        rows["dlkit_threefry"]()  # compiled now, under that lowering
        platform.unroll_threefry(unrolled)
    for row, kk in extra.items():
        c = load_config(config_name, overrides)
        if row == "dlkit_1step":  # one device, one step per call
            c.parallel.cpu_devices = 1
        rows[row], per_call[row] = dlkit_run(c, x, y, num_classes, kk), kk
    for variant in args.variants if name in XLA_IMPL else ():
        if variant.endswith("_bn") and name not in BN_FAMILIES:
            continue
        sets = {k: XLA_IMPL[name] if v == "XLA" else v for k, v in VARIANTS[variant].items()}
        c = load_config(config_name, {**overrides, **sets})
        rows[f"dlkit_{variant}"], per_call[f"dlkit_{variant}"] = (
            dlkit_run(c, x, y, num_classes, k),
            k,
        )
    peer = functools.partial(peer_run, args, config_name, overrides, x, y, num_classes)
    rows["torch_eager"], per_call["torch_eager"] = peer(False), 1
    if args.compile == "all" or (args.compile == "goal" and name in COMPILE_GOAL):
        run = peer(True)
        try:
            t = time.perf_counter()
            run()  # compiles here, outside timing
            print(f"  ({name}: torch.compile took {time.perf_counter() - t:.0f} s)", flush=True)
            rows["torch_compile"], per_call["torch_compile"] = run, 1
        except Exception as e:  # noqa: BLE001 - recorded in the table, the suite goes on
            errors["torch_compile"] = _one_line(e)
            getattr(run, "close", lambda: None)()
    return rows, per_call, errors, config, first_step_s


def parse_sets(items: list[str]) -> dict:
    """["step.mixed_precision=True", "model.impl=reference"] -> {key: value} (dlkit rows only)."""
    import ast

    out = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def run_family(name, args, rng) -> dict:
    """Times one family's rows round-robin; returns its JSON record."""
    from dlkit.extras.profile import time_round_robin

    load_before = os.getloadavg()
    rows, per_call, errors, config, first_step_s = family_rows(name, args, rng)
    for run in rows.values():  # warm-up: compiles; also sizes the auto round count
        run()
    t = time.perf_counter()
    for run in rows.values():
        run()
    per_round = time.perf_counter() - t
    rounds = args.rounds or int(np.clip(args.budget_s / max(per_round, 1e-3), 5, 30))
    timed = time_round_robin(rows, rounds, warmup=1)
    for run in rows.values():
        getattr(run, "close", lambda: None)()  # a peer process ends
    ms = {r: 1e3 * timed[r][0] / per_call[r] for r in rows}
    cpu_ms = {r: 1e3 * timed[r][1] / per_call[r] for r in rows}
    ratios = {
        f"{t}/{d}": ms[t] / ms[d]
        for t in ("torch_eager", "torch_compile")
        if t in ms
        for d in rows
        if d.startswith("dlkit")
    }
    ratios.update({f"{d}/dlkit": ms[d] / ms["dlkit"] for d in rows if d.startswith("dlkit_")})
    return {
        "family": name,
        "config": FAMILIES[name][0],
        "overrides": {
            k: list(v) if isinstance(v, tuple) else v for k, v in FAMILIES[name][1].items()
        },
        "batch_size": config.batch_size,
        "optimizer": config.optimizer.name,
        "steps_per_call": per_call,
        "first_step_s": first_step_s,  # dlkit row: state built, init and step compiled, one call
        "peer": args.peer,  # PyTorch rows: in their own process or inline
        "rounds": rounds,
        "ms_per_step": ms,
        "cpu_ms_per_step": cpu_ms,
        "ratios": ratios,
        "errors": errors,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def print_family(rec: dict) -> None:
    ms = rec["ms_per_step"]
    load = max(rec["loadavg_before"][0], rec["loadavg_after"][0])
    print(
        f"{rec['family']} ({rec['config']}, batch {rec['batch_size']}, {rec['optimizer']}), "
        f"{rec['rounds']} rounds, load {load:.1f}, "
        f"first dlkit step after {rec['first_step_s']:.1f} s",
        flush=True,
    )
    for row, v in ms.items():
        k = rec["steps_per_call"][row]
        print(f"  {row:14s} {v:9.2f} ms/step  cpu {rec['cpu_ms_per_step'][row]:9.2f}  (K={k})")
    for row, err in rec["errors"].items():
        print(f"  {row:14s} failed: {err}")
    for key, r in rec["ratios"].items():
        print(f"  ratio {key:28s} {r:5.2f}")


# ---------------------------------------------------------------- --profile -------------------

HEAVY = ("convolution", "dot", "reduce-window", "select-and-scatter", "scatter", "gather", "while")
KINDS = (  # (kind, pattern in the thunk's description), first match wins
    ("native conv (oneDNN)", r"custom-call.*/conv_\w*/"),
    ("native batch norm", r"custom-call.*/bn_\w*/"),
    ("native LSTM (oneDNN)", r"custom-call.*(lstm|rnn)"),
    ("batch norm (XLA)", r"/bn_\w*/"),
    ("rng (dropout masks)", r"threefry|random_bits|rng|dropout"),
    ("convolution", r"convolution"),
    ("dot", r"\bdot\b"),
    ("pooling", r"reduce-window|select-and-scatter|pool"),
    ("layernorm", r"ln_|LayerNorm|layer_norm|/norm"),
    ("attention elementwise (mask, softmax)", r"attend|attention_"),
    ("activation (gelu, tanh, relu)", r"gelu|tanh|relu|sigmoid"),
    ("softmax / loss", r"softmax|log_softmax|cross_entropy|logsumexp"),
    ("optimizer update", r"optax|adam|sgd|momentum|nesterov|scale_by|clip"),
    ("scan / while", r"while|scan"),
)


def cpu_seconds(run, repeats: int) -> float:
    """Median process-CPU seconds of run() (already compiled)."""
    from dlkit.extras.profile import time_round_robin

    return time_round_robin({"run": run}, repeats, warmup=0)["run"][1]


def matmul_peak(n: int, repeats: int) -> dict:
    """FLOP/s of n x n fp32 matmuls, JAX (XLA) and torch (if imported), best over n/2, n."""
    import sys

    import jax
    import jax.numpy as jnp

    torch = sys.modules.get("torch")
    out = {"jax": 0.0, "torch": 0.0}
    for m in (n // 2, n):
        a, f = jax.random.normal(jax.random.PRNGKey(0), (m, m)), jax.jit(jnp.matmul)
        f(a, a).block_until_ready()
        run = lambda a=a, f=f: f(a, a).block_until_ready()  # noqa: E731
        out["jax"] = max(out["jax"], 2 * m**3 / cpu_seconds(run, repeats))
        if torch is not None:
            t = torch.randn(m, m)
            out["torch"] = max(out["torch"], 2 * m**3 / cpu_seconds(lambda t=t: t @ t, repeats))
    return out


def hlo_ops(text: str) -> dict:
    """Thunk / instruction name -> 'kind: heavy ops inside' from the compiled HLO text."""
    comps, current = {}, None
    for line in text.splitlines():
        if m := re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line):
            current = m.group(1)
            comps[current] = []
        elif current and line.strip() and line.strip() != "}":
            comps[current].append(line.strip().removeprefix("ROOT "))
    out = {}
    for body in comps.values():
        for line in body:
            m = re.match(r"%?([\w.\-]+) = (\([^)]*\)|\S+) (\w[\w\-]*)\(", line)  # tuple shapes too
            if not m:
                continue
            name, shape, op = m.groups()
            called = re.findall(r"calls=%?([\w.\-]+)", line)
            inside = [o for c in called for o in _ops_in(comps.get(c, []))]
            heavy = sorted({o for o in inside if o in HEAVY}) or sorted(set(inside))[:3]
            where = re.search(r'op_name="([^"]+)"', line)
            where = "/".join(where.group(1).split("/")[-3:]) if where else ""
            inner = f" [{', '.join(heavy)}]" if called else ""
            shape = re.sub(r"\{[^}]*\}", "", shape)  # no layouts
            out[name] = f"{op} {shape}{inner} {where}"
    return out


def _ops_in(body: list[str]) -> list[str]:
    pattern = r"%?[\w.\-]+ = \S+ ([\w\-]+)\("
    return [m.group(1) for line in body if (m := re.match(pattern, line))]


def op_kind(description: str) -> str:
    """A coarse kind for a thunk, from the ops inside it and its layer path."""
    return next((k for k, p in KINDS if re.search(p, description, re.I)), "other elementwise")


def traced_ms_per_op(run, names: dict, calls: int = 3) -> collections.Counter:
    """Traced ms per step of each thunk in `names`, from a jax.profiler trace of `calls` runs."""
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(calls):
            run()
        jax.profiler.stop_trace()
        path = sorted(glob.glob(f"{tmp}/**/perfetto_trace.json.gz", recursive=True))[-1]
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    per_op = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            per_op[e["name"]] += e.get("dur", 0) / (1e3 * calls)  # ms per step
    return per_op


def profile_family(name: str, args, peak: float) -> dict:
    """FLOPs, CPU time, achieved fraction of peak and top thunks of one family's step (one
    device, one step per call)."""
    import jax
    import jax.numpy as jnp

    from dlkit.train import build_model, create_train_state, make_optimizer, make_steps, objectives

    config = load_config(FAMILIES[name][0], {**FAMILIES[name][1], **parse_sets(args.set)})
    x, y, num_classes = fake_batch(config, np.random.default_rng(0))
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    state = create_train_state(build_model(config, num_classes=num_classes), tx, x[:1], seed=0)
    train, _ = make_steps(objectives.get(config.loss))
    batch = {"inputs": jnp.asarray(x), "targets": jnp.asarray(y)}
    compiled = train.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost).get("flops", 0.0))
    box = [state]

    def run():
        box[0], sums = compiled(box[0], batch)
        jax.block_until_ready(sums["loss"])

    run()
    seconds = cpu_seconds(run, args.repeats)
    names = hlo_ops(compiled.as_text())
    per_op = traced_ms_per_op(run, names)
    total = sum(per_op.values()) or 1.0
    by_kind = collections.Counter()
    for op, ms in per_op.items():
        by_kind[op_kind(names[op])] += ms
    top = [
        {"op": op, "ms": round(ms, 2), "share": round(ms / total, 3), "hlo": names[op]}
        for op, ms in per_op.most_common(args.top)
    ]
    return {
        "family": name,
        "gflop_per_step": flops / 1e9,
        "cpu_ms_per_step": 1e3 * seconds,
        "gflops_achieved": flops / seconds / 1e9,
        "fraction_of_peak": flops / seconds / peak,
        "traced_ms_per_step": total,
        "top_ops": top,
        "by_kind": {k: round(ms / total, 3) for k, ms in by_kind.most_common()},
        "loadavg": os.getloadavg(),
    }


def profile_families(names, args, info) -> dict:
    """--profile: the matmul peak, then each family's FLOP/s and top ops; the JSON payload."""
    peaks = matmul_peak(args.matmul, args.repeats)
    peak = max(peaks.values())
    print(
        f"matmul peak {args.matmul}^2 fp32: XLA {peaks['jax'] / 1e9:.1f}, torch "
        f"{peaks['torch'] / 1e9:.1f} GFLOP/s (process CPU time)",
        flush=True,
    )
    records = []
    for name in names:
        rec = profile_family(name, args, peak)
        records.append(rec)
        print(
            f"{name}: {rec['gflop_per_step']:.3f} GFLOP/step, {rec['cpu_ms_per_step']:.1f} ms "
            f"CPU/step, {rec['gflops_achieved']:.1f} GFLOP/s = {rec['fraction_of_peak']:.0%} of "
            f"peak; load {rec['loadavg'][0]:.1f}; top ops (traced {rec['traced_ms_per_step']:.1f}"
            " ms/step):",
            flush=True,
        )
        print(f"    by kind: {', '.join(f'{k} {v:.0%}' for k, v in rec['by_kind'].items())}")
        for t in rec["top_ops"]:
            print(f"   {t['share']:5.0%} {t['ms']:8.2f} ms  {t['op'][:28]:28s} {t['hlo'][:120]}")
    return {"machine": info, "threads": args.threads, "matmul_peak": peaks, "families": records}


# ---------------------------------------------------------------- main -------------------------


# ---------------------------------------------------------------- --layers --------------------

LAYER_IMPLS = ("onednn", "reference", "fast")  # dlkit.ops.conv2d impls timed per layer


def layer_ms(runs: dict, args) -> dict:
    """{key: median wall ms} of one layer's closures, in turn (--rounds, default 10; 2 warm-up)."""
    from dlkit.extras.profile import time_round_robin

    return {k: 1e3 * v[0] for k, v in time_round_robin(runs, args.rounds or 10, warmup=2).items()}


def module_calls(config, x, cls, key) -> collections.Counter:
    """{key(module, args, kwargs): count} over the outermost `cls.__call__` calls of the config's
    model (a call inside another of the same module, e.g. flax's own __call__ under dlkit's
    BatchNorm, is not counted again)."""
    import flax.linen as nn
    import jax

    from dlkit.train import build_model

    seen, inside = collections.Counter(), set()

    def spy(next_fun, args, kwargs, context):
        m = context.module
        if not isinstance(m, cls) or context.method_name != "__call__" or id(m) in inside:
            return next_fun(*args, **kwargs)
        seen[key(m, args, kwargs)] += 1
        inside.add(id(m))
        try:
            return next_fun(*args, **kwargs)
        finally:
            inside.discard(id(m))

    model = build_model(config, num_classes=10)
    with nn.intercept_methods(spy):
        jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    return seen


def conv_layers(config, x) -> collections.Counter:
    """{(x shape, w shape, stride, pads): count} of every Conv2D call in the config's model."""
    from dlkit.nn.cnn import Conv2D
    from dlkit.ops.conv import explicit_padding

    def key(m, args, kwargs):
        xs = tuple(args[0].shape)
        pads = explicit_padding(m.padding, m.kernel_size, m.strides, xs[1:3])
        w = (*m.kernel_size, xs[-1], m.features)
        return xs, w, tuple(m.strides), tuple(map(tuple, pads))

    return module_calls(config, x, Conv2D, key)


def _fwd_bwd(f, *args):
    """The gradients of f at args for the cotangent f(*args) (one forward)."""
    import jax

    y, vjp = jax.vjp(f, *args)
    return vjp(y)


def layer_runs(xs, ws, stride, pads) -> dict:
    """{(impl, "fwd"|"fwd+bwd"): closure} for one conv: dlkit.ops impls and PyTorch."""
    import jax
    import torch

    from dlkit.ops import conv

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs, np.float32), rng.standard_normal(ws, np.float32) * 0.1
    runs = {}
    for impl in LAYER_IMPLS:
        f = lambda x, w, impl=impl: conv.conv2d(x, w, None, stride, pads, impl=impl)  # noqa: E731
        fwd = jax.jit(f)
        both = jax.jit(functools.partial(_fwd_bwd, f))
        xj, wj = jax.device_put(x), jax.device_put(w)
        runs[(impl, "fwd")] = lambda fwd=fwd, xj=xj, wj=wj: jax.block_until_ready(fwd(xj, wj))
        runs[(impl, "fwd+bwd")] = lambda b=both, xj=xj, wj=wj: jax.block_until_ready(b(xj, wj))
    (pt, pb), (pl, pr) = pads
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_()
    wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).requires_grad_()
    sym = pt == pb and pl == pr

    def tconv():
        xin = xt if sym else torch.nn.functional.pad(xt, (pl, pr, pt, pb))
        return torch.nn.functional.conv2d(xin, wt, stride=stride, padding=(pt, pl) if sym else 0)

    def tfwd():
        with torch.no_grad():
            tconv()

    def tboth():
        xt.grad = wt.grad = None
        y = tconv()
        y.backward(y.detach())

    runs[("torch", "fwd")], runs[("torch", "fwd+bwd")] = tfwd, tboth
    return runs


def layer_table(family: str, args, info) -> dict:
    """Per distinct conv of the family's model: ms of forward and fwd+bwd per impl, a table."""

    if family not in (*CONV_FAMILIES, "transformer_lm"):
        choices = ", ".join((*CONV_FAMILIES, "transformer_lm"))
        raise SystemExit(f"--layers takes a conv family or transformer_lm: {choices}")
    config_name, overrides, _ = FAMILIES[family]
    config = load_config(config_name, {**overrides, **parse_sets(args.set)})
    x, _, _ = fake_batch(config, np.random.default_rng(0))
    if family == "transformer_lm":
        rows = attention_table(config, x, args)
        return {"machine": info, "family": family, "attention_layers": rows}
    impls = (*LAYER_IMPLS, "torch")
    rows, load_before = [], os.getloadavg()
    for (xs, ws, stride, pads), count in conv_layers(config, x[:1]).items():
        xs = (config.batch_size, *xs[1:])
        timed = layer_ms(layer_runs(xs, ws, stride, pads), args)
        ho = (xs[1] + sum(pads[0]) - ws[0]) // stride[0] + 1
        wo = (xs[2] + sum(pads[1]) - ws[1]) // stride[1] + 1
        gflop = 2 * xs[0] * ho * wo * ws[0] * ws[1] * ws[2] * ws[3] / 1e9
        ms = {f"{i} {p}": timed[(i, p)] for i in impls for p in ("fwd", "fwd+bwd")}
        rows.append(
            {
                "x": xs,
                "w": ws,
                "stride": stride,
                "pads": pads,
                "count": count,
                "gflop_fwd": gflop,
                "ms": ms,
            }
        )
    load = max(load_before[0], os.getloadavg()[0])
    name = {"onednn": "oneDNN", "reference": "lax", "fast": "XLA fast", "torch": "torch"}
    print(f"\n{family} (batch {config.batch_size}) per-layer convs, median ms, load {load:.1f}")
    head = [f"{name[i]} {p}" for p in ("fwd", "fwd+bwd") for i in impls]
    print("| x (B,H,W,C) | w (kh,kw,Ci,Co) | stride | n | GFLOP fwd | " + " | ".join(head) + " |")
    print("|---|---|---|---:|---:|" + "---:|" * len(head))
    for r in rows:
        cells = " | ".join(f"{r['ms'][f'{i} {p}']:.2f}" for p in ("fwd", "fwd+bwd") for i in impls)
        print(
            f"| {r['x']} | {r['w']} | {r['stride'][0]} | {r['count']} | {r['gflop_fwd']:.2f} | "
            f"{cells} |"
        )
    total = {k: sum(r["ms"][k] * r["count"] for r in rows) for k in rows[0]["ms"]}
    cells = " | ".join(f"{total[f'{i} {p}']:.1f}" for p in ("fwd", "fwd+bwd") for i in impls)
    print(f"| all (x n) | | | | | {cells} |")
    norms, pools = norm_table(config, x, args), pool_table(config, x, args)
    return {
        "machine": info,
        "family": family,
        "layers": rows,
        "total_ms": total,
        "norm_layers": norms,
        "pool_layers": pools,
        "load": load,
    }


def norm_layers(config, x) -> collections.Counter:
    """{(x shape, relu, residual): count} of every dlkit.nn.BatchNorm call in the model."""
    from dlkit.nn.norm import BatchNorm

    def key(m, args, kwargs):
        return tuple(args[0].shape), m.relu, kwargs.get("residual") is not None

    return module_calls(config, x, BatchNorm, key)


def norm_runs(xs, relu: bool, residual: bool) -> dict:
    """{impl: closure} for one training-mode BatchNorm's forward + backward (cotangent y):
    dlkit.ops.batch_norm's impls and PyTorch's F.batch_norm (+ residual, ReLU)."""
    import jax
    import torch

    from dlkit.ops.batch_norm import batch_norm

    rng = np.random.default_rng(0)
    x, r = (rng.standard_normal(xs, np.float32) for _ in range(2))
    c = np.ones(xs[-1], np.float32)
    runs = {}
    for impl in ("onednn", "reference"):

        def f(x, s, b, r, impl=impl):
            return batch_norm(x, s, b, 1e-5, relu, r if residual else None, impl=impl)[0]

        both = jax.jit(functools.partial(_fwd_bwd, f))
        args = [jax.device_put(a) for a in (x, c, c * 0, r)]
        runs[impl] = lambda both=both, args=args: jax.block_until_ready(both(*args))
    t = [torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))) for a in (x, r)]
    xt, rt = t[0].requires_grad_(), t[1].requires_grad_(residual)
    st, bt = torch.ones(xs[-1], requires_grad=True), torch.zeros(xs[-1], requires_grad=True)
    mean, var = torch.zeros(xs[-1]), torch.ones(xs[-1])

    def tboth():
        y = torch.nn.functional.batch_norm(xt, mean, var, st, bt, training=True, eps=1e-5)
        y = y + rt if residual else y
        y = torch.relu(y) if relu else y
        y.backward(y.detach())

    runs["torch"] = tboth
    return runs


def norm_table(config, x, args) -> list:
    """Per distinct BatchNorm of the model: fwd+bwd ms per impl, a table (none without one)."""

    rows = []
    for (xs, relu, residual), count in norm_layers(config, x[:1]).items():
        xs = (config.batch_size, *xs[1:])
        ms = layer_ms(norm_runs(xs, relu, residual), args)
        rows.append({"x": xs, "relu": relu, "residual": residual, "count": count, "ms": ms})
    if rows:
        print("\nBatchNorm fwd+bwd per layer, median ms (dlkit kernel, XLA reference, torch)")
        print("| x (B,H,W,C) | ReLU | residual | n | kernel | XLA | torch |")
        print("|---|---|---|---:|---:|---:|---:|")
        for r in rows:
            cells = " | ".join(f"{r['ms'][k]:.2f}" for k in ("onednn", "reference", "torch"))
            print(f"| {r['x']} | {r['relu']} | {r['residual']} | {r['count']} | {cells} |")
        total = {k: sum(r["ms"][k] * r["count"] for r in rows) for k in rows[0]["ms"]}
        cells = " | ".join(f"{total[k]:.1f}" for k in ("onednn", "reference", "torch"))
        print(f"| all (x n) | | | | {cells} |")
    return rows


POOL_IMPLS = ("fast", "reference", "torch", "torch_onednn")  # pooling rows per layer


def pool_layers(config, x) -> collections.Counter:
    """{(kind, x shape, window, strides, padding): count} of every MaxPool / AvgPool call."""
    from dlkit.nn.cnn import AvgPool, MaxPool

    def key(m, args, kwargs):
        window = tuple(m.window_shape)
        kind = "max" if isinstance(m, MaxPool) else "avg"
        return kind, tuple(args[0].shape), window, tuple(m.strides or window), m.padding

    return module_calls(config, x, (MaxPool, AvgPool), key)


def pool_runs(kind, xs, window, strides, padding) -> dict:
    """{impl: closure} for one pooling's forward + backward (cotangent y): dlkit's impls (max:
    ops.max_pool2d's fast and reference; avg: ops.avg_pool as "reference"), PyTorch's own
    kernel (NCHW, as its twins run) and oneDNN's (PyTorch's oneDNN 3.12 via mkldnn tensors,
    channels-last)."""
    import jax
    import torch

    from dlkit.ops import conv, pooling

    if padding != "VALID":
        raise SystemExit(f"--layers: pooling padding {padding!r} has no PyTorch row (VALID only)")
    x = np.random.default_rng(0).standard_normal(xs, np.float32)
    fns = {"reference": functools.partial(pooling.avg_pool, window=window, stride=strides)}
    if kind == "max":
        fns = {
            i: functools.partial(conv.max_pool2d, window=window, stride=strides, impl=i)
            for i in POOL_IMPLS[:2]
        }
    runs = {}
    for impl, f in fns.items():
        both = jax.jit(functools.partial(_fwd_bwd, f))
        xj = jax.device_put(x)
        runs[impl] = lambda both=both, xj=xj: jax.block_until_ready(both(xj))
    tf = getattr(torch.nn.functional, f"{kind}_pool2d")
    nchw = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    last = nchw.contiguous(memory_format=torch.channels_last).to_mkldnn()
    for impl, xt in (("torch", nchw), ("torch_onednn", last)):
        xt.requires_grad_()

        def tboth(xt=xt):
            xt.grad = None
            y = tf(xt, window, strides)
            y.backward(y.detach())

        runs[impl] = tboth
    return runs


def pool_table(config, x, args) -> list:
    """Per distinct pooling of the model: fwd+bwd ms per impl, a table (none without one)."""

    rows = []
    for (kind, xs, window, strides, padding), count in pool_layers(config, x[:1]).items():
        xs = (config.batch_size, *xs[1:])
        ms = layer_ms(pool_runs(kind, xs, window, strides, padding), args)
        row = {"kind": kind, "x": xs, "window": window, "strides": strides, "count": count}
        rows.append({**row, "ms": ms})
    if rows:
        print("\npooling fwd+bwd per layer, median ms (dlkit impls; PyTorch's kernel and oneDNN)")
        print("| pool | x (B,H,W,C) | window | stride | n | " + " | ".join(POOL_IMPLS) + " |")
        print("|---|---|---|---|---:|" + "---:|" * len(POOL_IMPLS))
        for r in rows:
            cells = " | ".join(f"{r['ms'][k]:.3f}" if k in r["ms"] else "-" for k in POOL_IMPLS)
            head = f"| {r['kind']} | {r['x']} | {r['window']} | {r['strides']} | {r['count']} |"
            print(f"{head} {cells} |")
    return rows


ATTENTION_IMPLS = ("cpu", "xla", "chunked")  # dot_product_attention backends timed per layer


def attention_layers(config, x) -> collections.Counter:
    """{(q shape (B, T, H, D), kv heads, causal): count} of every MultiHeadAttention call."""
    from dlkit.nn.attention import MultiHeadAttention

    def key(m, args, kwargs):
        b, t, e = args[0].shape
        d = m.head_dim or e // m.num_heads
        return (b, t, m.num_heads, d), m.num_kv_heads or m.num_heads, bool(kwargs.get("causal"))

    return module_calls(config, x, MultiHeadAttention, key)


def attention_runs(qs, kv_heads: int, causal: bool) -> dict:
    """{impl: closure} for one attention's forward + backward (cotangent out): dlkit's
    dot_product_attention backends and PyTorch's scaled_dot_product_attention."""
    import jax
    import torch

    from dlkit.ops import dot_product_attention

    rng = np.random.default_rng(0)
    kvs = (*qs[:2], kv_heads, qs[3])
    q, k, v = rng.standard_normal(qs, np.float32), *rng.standard_normal((2, *kvs), np.float32)
    runs = {}
    for impl in ATTENTION_IMPLS:

        def f(q, k, v, impl=impl):
            return dot_product_attention(q, k, v, causal=causal, implementation=impl)

        both = jax.jit(functools.partial(_fwd_bwd, f))
        args = [jax.device_put(a) for a in (q, k, v)]
        runs[impl] = lambda both=both, args=args: jax.block_until_ready(both(*args))
    qt, kt, vt = (torch.from_numpy(a.transpose(0, 2, 1, 3).copy()) for a in (q, k, v))
    qt, kt, vt = (a.requires_grad_() for a in (qt, kt, vt))
    gqa = {"enable_gqa": True} if kv_heads != qs[2] else {}

    def tboth():
        y = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, **gqa)
        y.backward(y.detach())

    runs["torch"] = tboth
    return runs


def attention_table(config, x, args) -> list:
    """Per distinct attention of the model: fwd+bwd ms per backend and PyTorch's SDPA, a table."""

    rows = []
    for (qs, kv_heads, causal), count in attention_layers(config, x[:1]).items():
        qs = (config.batch_size, *qs[1:])
        ms = layer_ms(attention_runs(qs, kv_heads, causal), args)
        rows.append({"q": qs, "kv_heads": kv_heads, "causal": causal, "count": count, "ms": ms})
    impls = (*ATTENTION_IMPLS, "torch")
    print("\nattention fwd+bwd per layer, median ms (dlkit backends, PyTorch SDPA)")
    print("| q (B,T,H,D) | kv heads | causal | n | " + " | ".join(impls) + " |")
    print("|---|---:|---|---:|" + "---:|" * len(impls))
    for r in rows:
        cells = " | ".join(f"{r['ms'][k]:.2f}" for k in impls)
        print(f"| {r['q']} | {r['kv_heads']} | {r['causal']} | {r['count']} | {cells} |")
    return rows


# --platform: the door as binaries call it, not at all, without one of its tricks, or with the
# opt-in unrolled threefry (A/B)
PLATFORM_AB = (
    "on",
    "off",
    "no_malloc",
    "no_split",
    "async_dispatch",
    "omp_default",
    "unrolled_threefry",
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset")
    parser.add_argument("--rounds", type=int, default=0, help="0: auto from --budget_s")
    parser.add_argument("--budget_s", type=float, default=15.0, help="timed seconds per family")
    parser.add_argument(
        "--compile",
        choices=("goal", "all", "none"),
        default="goal",
        help="torch.compile rows for: the families with a compile goal (conv nets, transformer), "
        "all, or none (compiling takes tens of seconds per family on 2 cores)",
    )
    parser.add_argument(
        "--platform",
        choices=PLATFORM_AB,
        default="on",
        help="dlkit.platform.configure as the door calls it (on), not at all (off), without the "
        "malloc keep-arena, without a CPU device per core, with XLA's asynchronous dispatch, "
        "with OpenMP's default wait policy, or with jax.random's hash unrolled on CPU "
        "(A/B of each trick; omp_default also leaves PyTorch, which shares the OpenMP runtime, at "
        "its default: the fair peer)",
    )
    parser.add_argument(
        "--peer",
        choices=("process", "inline"),
        default="process",
        help="PyTorch rows in their own process at PyTorch's defaults (each call timed there, in "
        "turn with dlkit's rows), or inline in this process (one OpenMP runtime for both)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="pin to this many CPUs, both frameworks that many threads (0: every usable CPU); "
        "1 makes process-CPU ratios robust to load from other processes",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="config override, e.g. step.mixed_precision=True (repeatable; torch: shapes only)",
    )
    parser.add_argument(
        "--variants",
        default="xla,1dev",
        help="extra dlkit rows for the conv families, comma-separated from "
        f"{', '.join(VARIANTS)} (row dlkit_<variant>; 'none': no extra rows)",
    )
    parser.add_argument(
        "--threefry_ab",
        action="store_true",
        help="one more dlkit row, dlkit_threefry: the same step traced under the other CPU "
        "lowering of jax.random's hash (unrolled, or rolled under --platform=unrolled_threefry); "
        "in-process A/B of DLKIT_THREEFRY",
    )
    parser.add_argument(
        "--layers",
        default="",
        help="instead: per-layer conv table of this family (resnet18): forward and fwd+bwd ms "
        "of each distinct conv, oneDNN vs XLA (lax, dlkit fast) vs PyTorch; then each distinct "
        "BatchNorm's fwd+bwd, dlkit's kernel vs XLA vs PyTorch, and each distinct pooling's, "
        "dlkit's impls vs PyTorch's kernel and oneDNN's; transformer_lm: each distinct "
        "attention's fwd+bwd, dlkit's backends (cpu, xla, chunked) vs PyTorch's SDPA",
    )
    parser.add_argument("--profile", action="store_true", help="FLOP/s and top ops per family")
    parser.add_argument("--repeats", type=int, default=5, help="--profile: timed calls")
    parser.add_argument("--matmul", type=int, default=1024, help="--profile: peak matmul size")
    parser.add_argument("--top", type=int, default=8, help="--profile: top ops listed per family")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"seconds: families {SMOKE_FAMILIES} (unless given), {' '.join(SMOKE_SETS)}, "
        "1 round, no torch.compile, a 128^2 matmul",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()
    if args.smoke:
        if args.families == parser.get_default("families"):
            args.families = SMOKE_FAMILIES
        args.set = [*SMOKE_SETS, *args.set]
        args.rounds, args.compile, args.repeats, args.matmul = 1, "none", 1, 128
        if args.variants == parser.get_default("variants"):
            args.variants = "none"
    args.variants = [v for v in args.variants.split(",") if v.strip() and v != "none"]
    if bad := [v for v in args.variants if v not in VARIANTS]:
        parser.error(f"unknown --variants {bad}; choose from: {', '.join(VARIANTS)}")
    return args


def print_machine(info: dict) -> None:
    print(
        f"CPU: {info['model']} ({info.get('vendor', '?')}), ISA {' '.join(info['flags'])}, "
        f"{info['cpus_usable']} usable of {info['cpus_online']} CPUs, load "
        f"{' '.join(f'{v:.2f}' for v in info['loadavg'])}"
    )
    print(
        f"python {info['python']}, jax {info['jax']}, jaxlib {info['jaxlib']}, torch "
        f"{info['torch']} ({info['torch_threads']} threads), {info['jax_devices']} JAX CPU "
        f"devices, env {info['env'] or '{}'}"
    )
    print(f"dlkit platform: {info['platform']}", flush=True)


def print_table(records: list) -> None:
    print(
        "\n| family | dlkit ms | eager ms | compile ms | eager/dlkit | compile/dlkit "
        "| eager/dlkit (cpu) | compile/dlkit (cpu) | load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rec in records:
        ms, r = rec["ms_per_step"], rec["ratios"]
        comp = f"{ms['torch_compile']:.2f}" if "torch_compile" in ms else "-"
        comp = "failed" if "torch_compile" in rec["errors"] else comp
        rc = f"{r['torch_compile/dlkit']:.2f}" if "torch_compile/dlkit" in r else "-"
        load = max(rec["loadavg_before"][0], rec["loadavg_after"][0])
        cpu = rec["cpu_ms_per_step"]
        ce = cpu["torch_eager"] / cpu["dlkit"]
        cc = f"{cpu['torch_compile'] / cpu['dlkit']:.2f}" if "torch_compile" in cpu else "-"
        print(
            f"| {rec['family']} | {ms['dlkit']:.2f} | {ms['torch_eager']:.2f} | {comp} | "
            f"{r['torch_eager/dlkit']:.2f} | {rc} | {ce:.2f} | {cc} | {load:.1f} |"
        )


def main():
    global PEER_ENV
    args = parse_args()
    PEER_ENV = dict(os.environ)  # the PyTorch peer process gets the environment as given
    flags = [os.environ.get("XLA_FLAGS", "")]  # before jax starts
    if args.profile:  # each thunk (fusion, library call) one trace event
        flags.append("--xla_cpu_enable_xprof_traceme=true")
    if args.threads:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
        if args.threads == 1:
            flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["XLA_FLAGS"] = " ".join(flags).strip()
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    if bad := [n for n in names if n not in FAMILIES]:
        raise SystemExit(f"unknown families {bad}; choose from: {', '.join(FAMILIES)}")
    from dlkit import platform as host_platform
    from dlkit.train.options import RunOptions

    sets = parse_sets(args.set)
    runs = [
        RunOptions.from_config(load_config(FAMILIES[n][0], {**FAMILIES[n][1], **sets}))
        for n in names
    ]
    # PyTorch's bundled libgomp.so.1 has the system soname: one OpenMP runtime for both, so the
    # door's OMP_WAIT_POLICY reaches the peer too (--platform=omp_default keeps its default)
    try:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    except ImportError:
        if not args.profile:
            raise SystemExit("the suite's peer rows need PyTorch (pip install torch)") from None
    host = host_platform.Platform(host_platform.CpuFeatures.detect(), notes=("--platform=off",))
    if args.platform == "unrolled_threefry":
        os.environ["DLKIT_THREEFRY"] = "unrolled"  # what the door reads (dlkit.platform)
    if args.platform != "off":  # before jax starts, as experiments/train.py
        host = host_platform.configure(
            *(r.parallel.cpu_devices for r in runs),
            keep_malloc_arena=args.platform != "no_malloc",
            split=args.platform != "no_split",
            sync_dispatch=args.platform != "async_dispatch",
            omp_passive=args.platform != "omp_default",
        )
    args.host = host  # what the door set up (--threefry_ab reads its lowering)
    from dlkit.extras.profile import machine, results_name

    info = machine()
    info["platform"] = host.describe()
    info["threads_arg"], info["sets"] = args.threads, args.set
    print_machine(info)
    if args.layers:
        kind, payload = "cpu_layers", layer_table(args.layers, args, info)
    elif args.profile:
        kind, payload = "cpu_profile", profile_families(names, args, info)
    else:
        rng = np.random.default_rng(0)
        records, start = [], time.perf_counter()
        for name in names:
            rec = run_family(name, args, rng)
            print_family(rec)
            records.append(rec)
        print(f"suite wall time {time.perf_counter() - start:.0f} s")
        print_table(records)
        kind, payload = "cpu_suite", {"machine": info, "families": records}
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / results_name(kind, info, stamp)
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
