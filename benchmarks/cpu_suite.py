"""CPU suite: every family's dlkit train step against PyTorch eager and torch.compile, one process.

Each family is built from its experiment config (experiments/configs/<config>.py: model, optimizer,
batch, steps_per_call, parallel.cpu_devices) exactly as experiments/train.py trains it, through the
training loop's Runner ("dlkit" row); PyTorch runs the same network and optimizer eagerly
("torch_eager") and through torch.compile of the module ("torch_compile", compiled in the warm-up,
outside timing; a compile failure is recorded, not fatal). Rows of one family run round-robin (one
call of each per round) so load from other processes hits all alike; figures are medians per
train step (a K-step dispatch counts K steps). fp32 everywhere, PyTorch set to as many threads as
the process may use (XLA's default pool is that size too). Ratio = torch ms / dlkit ms (> 1: dlkit
faster). Prints the machine (CPU model, ISA flags, cores, load before and after each family,
versions, threads, allocator env, XLA_FLAGS, the CPU policy dlkit chose) and writes a JSON record
to benchmarks/results/cpu_suite-<cpu>-<date>.json.

    JAX_PLATFORMS=cpu python benchmarks/cpu_suite.py [--families cnn,transformer_lm]
        [--rounds 0 (auto: --budget_s per family, 5..30 rounds)] [--compile goal|all|none]
        [--threads 1] [--set mixed_precision=True] [--no_policy]
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import sys
import time

import numpy as np
from timing import time_round_robin  # benchmarks/timing.py (run as scripts)

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
# input of one example: ("image", H, W, C) | ("vector", D) | ("tokens", T, vocab)
INPUTS = {
    "mnist": ("image", 28, 28, 1),
    "cifar10": ("image", 32, 32, 3),
    "digits": ("vector", 64),
    "tiny_shakespeare": ("tokens", 128, 65),
}
ISA = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def load_config(name: str, overrides: dict):
    """experiments/configs/<name>.py's get_config() with dotted-key overrides."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments/configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        node, *path = key.split(".")
        target = config if not path else config[node]
        target[path[-1] if path else node] = value
    return config


def fake_batch(config, rng):
    """A batch of the config's data shape: (inputs, int targets), numpy."""
    kind, *shape = INPUTS[config.data.name]
    b = config.batch_size
    if kind == "tokens":
        t, vocab = shape
        text = rng.integers(0, vocab, (b, t + 1)).astype(np.int32)
        return text[:, :-1], text[:, 1:], vocab
    x = rng.random((b, *shape), np.float32)
    return x, rng.integers(0, 10, b).astype(np.int32), 10


# ---------------------------------------------------------------- machine ----------------------


def machine() -> dict:
    """CPU model, ISA flags that matter, cores, load, versions, allocator env, XLA_FLAGS."""
    info = {"model": platform.processor() or "unknown", "flags": []}
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            info["model"] = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            info["flags"] = [f for f in ISA if f in m.group(1).split()]
        if m := re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M):
            info["vendor"] = m.group(1).strip()
    except OSError:
        pass
    import jax
    import jaxlib

    try:
        import torch
    except ImportError:  # cpu_profile.py runs without it (e.g. another jax in its own venv)
        torch = None
    info.update(
        cpus_usable=len(os.sched_getaffinity(0)),
        cpus_online=os.cpu_count(),
        loadavg=os.getloadavg(),
        python=platform.python_version(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        torch=torch.__version__ if torch else None,
        torch_threads=torch.get_num_threads() if torch else None,
        jax_devices=len(jax.devices()),
        env={
            k: v
            for k, v in os.environ.items()
            if k.startswith(("MALLOC_", "XLA_", "OMP_", "MKL_", "DLKIT_")) or k == "LD_PRELOAD"
        },
    )
    return info


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


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
    runner = Runner.create(options, objective, devices=cpu_layout.first_devices(options))
    tx = make_optimizer(config.optimizer, config.num_train_steps)
    state = runner.place(create_train_state(model, tx, x[:1], seed=0))
    batch = {"inputs": x, "targets": y}
    runner, state, layout = cpu_layout.fit_to_cpu(options, objective, runner, state, batch)
    n = runner.mesh.devices.size
    fixed = f"{n} CPU device{'s' if n > 1 else ''} (parallel.cpu_devices)"
    print(f"  ({config.model.name}: {layout.reason if layout else fixed})")
    batches = [batch] * steps_per_call
    box = [state]

    def run():
        box[0], sums = runner.train(box[0], batches)
        jax.block_until_ready(sums["loss"])

    return run


# ---------------------------------------------------------------- torch ------------------------


def torch_net(config, num_classes):
    """The family's network in PyTorch (NCHW convs; same widths, activations, norms, dropout)."""
    from torch import nn

    m, name = config.model, config.model.name
    kind, *shape = INPUTS[config.data.name]
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}

    if name == "mlp":
        layers, width = [nn.Flatten()], int(np.prod(shape))
        for h in m.hidden_sizes:
            layers += [nn.Linear(width, h), act[m.get("activation", "relu")]()]
            if m.get("dropout_rate", 0.0):
                layers.append(nn.Dropout(m.dropout_rate))
            width = h
        return nn.Sequential(*layers, nn.Linear(width, num_classes))
    if name in ("cnn", "lenet5"):
        lenet = name == "lenet5"
        feats, k = ((6, 16), 5) if lenet else (tuple(m.get("features", (32, 64))), 3)
        pads = (k // 2, 0) if lenet else (k // 2,) * len(feats)
        a = nn.Tanh if lenet else nn.ReLU
        pool = nn.AvgPool2d if lenet else nn.MaxPool2d
        layers, c, hw = [], shape[2], shape[0]
        for f, p in zip(feats, pads, strict=True):
            layers += [nn.Conv2d(c, f, k, padding=p), a(), pool(2)]
            c, hw = f, (hw + 2 * p - k + 1) // 2
        layers.append(nn.Flatten())
        width, drop = c * hw * hw, m.get("dropout_rate", 0.0)
        for h in (120, 84) if lenet else tuple(m.get("hidden", (256,))):
            layers += ([nn.Dropout(drop)] if drop else []) + [nn.Linear(width, h), a()]
            width = h
        layers += ([nn.Dropout(drop)] if drop else []) + [nn.Linear(width, num_classes)]
        return nn.Sequential(*layers)
    if name.startswith("vgg"):
        from dlkit.nn.vgg import DEPTHS

        depth = int(re.match(r"vgg(\d+)", name).group(1))
        depths, widths = tuple(m.get("depths", DEPTHS[depth])), tuple(m.get("widths"))
        layers, c = [], shape[2]
        for d, w in zip(depths, widths, strict=True):
            for _ in range(d):
                layers += [nn.Conv2d(c, w, 3, padding=1)]
                layers += [nn.BatchNorm2d(w)] if name.endswith("_bn") else []
                layers += [nn.ReLU()]
                c = w
            layers.append(nn.MaxPool2d(2))
        p, h = m.pool_size, m.hidden
        layers += [nn.AdaptiveAvgPool2d(p), nn.Flatten()]
        for i in range(2):
            layers += [nn.Linear(c * p * p if i == 0 else h, h), nn.ReLU(), nn.Dropout(0.5)]
        return nn.Sequential(*layers, nn.Linear(h, num_classes))
    if name == "resnet18":
        return _torch_resnet18(num_classes)
    if name in ("char_lstm", "char_gru"):
        rnn = nn.LSTM if name == "char_lstm" else nn.GRU

        class CharRNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(num_classes, m.embed_dim)
                self.rnn = rnn(m.embed_dim, m.hidden_size, m.num_layers, batch_first=True)
                self.head = nn.Linear(m.hidden_size, num_classes)

            def forward(self, tokens):
                return self.head(self.rnn(self.embed(tokens))[0])

        return CharRNN()
    if name == "transformer_lm":
        return _torch_transformer(m, num_classes)
    raise SystemExit(f"no PyTorch twin for model {name!r}")


def _torch_resnet18(num_classes):
    """torchvision's resnet18 (BasicBlock, bias-free convs, BN) with the CIFAR stem."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            h = self.b2(self.c2(nn.functional.relu(self.b1(self.c1(x)))))
            return nn.functional.relu(h + (x if self.short is None else self.short(x)))

    layers, c = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for i, w in enumerate((64, 128, 256, 512)):
        layers += [Block(c, w, 1 if i == 0 else 2), Block(w, w, 1)]
        c = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


def _torch_transformer(m, vocab):
    """Pre-LN decoder: rotary or learned positions, GELU (tanh) MLP, tied or separate head."""
    import torch
    from torch import nn

    e, heads, drop = m.embed_dim, m.num_heads, m.get("dropout_rate", 0.0)
    rope = m.get("positional", "learned") == "rope"

    def rotary(t):  # t (B, heads, T, d): rotate half-pairs by position angles
        d, n = t.shape[-1], t.shape[-2]
        inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        ang = torch.arange(n, dtype=torch.float32)[:, None] * inv[None]
        cos, sin = ang.cos(), ang.sin()
        a, b = t[..., : d // 2], t[..., d // 2 :]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(e), nn.LayerNorm(e)
            self.qkv, self.out = nn.Linear(e, 3 * e), nn.Linear(e, e)
            self.up, self.down = nn.Linear(e, m.mlp_dim), nn.Linear(m.mlp_dim, e)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, heads, e // heads).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))
            if rope:
                q, k = rotary(q), rotary(k)
            a = nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=drop if self.training else 0.0
            )
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, e)))
            h = self.down(nn.functional.gelu(self.up(self.ln2(x)), approximate="tanh"))
            return x + self.drop(h)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, e)
            self.pos = None if rope else nn.Parameter(torch.zeros(m.max_len, e))
            self.blocks = nn.ModuleList(Block() for _ in range(m.num_layers))
            self.ln, self.drop = nn.LayerNorm(e), nn.Dropout(drop)
            self.head = None if m.get("tie_embeddings", False) else nn.Linear(e, vocab)

        def forward(self, tokens):
            x = self.embed(tokens)
            x = self.drop(x if self.pos is None else x + self.pos[: tokens.shape[1]])
            for block in self.blocks:
                x = block(x)
            x = self.ln(x)
            return x @ self.embed.weight.T if self.head is None else self.head(x)

    return LM()


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


# ---------------------------------------------------------------- suite ------------------------


def family_rows(name, args, rng) -> tuple[dict, dict, dict, object]:
    """({row: closure}, {row: steps per call}, {row: error}, config) for one family."""
    config_name, overrides, extra = FAMILIES[name]
    overrides = {**overrides, **parse_sets(args.set)}
    config = load_config(config_name, overrides)
    x, y, num_classes = fake_batch(config, rng)
    rows, per_call, errors = {}, {}, {}
    k = int(config.parallel.get("steps_per_call", 1) or 1)
    rows["dlkit"], per_call["dlkit"] = dlkit_run(config, x, y, num_classes, k), k
    for row, kk in extra.items():
        c = load_config(config_name, overrides)
        if row == "dlkit_1step":  # one device, one step per call
            c.parallel.cpu_devices = 1
        rows[row], per_call[row] = dlkit_run(c, x, y, num_classes, kk), kk
    rows["torch_eager"], per_call["torch_eager"] = torch_run(config, x, y, num_classes, False), 1
    if args.compile == "all" or (args.compile == "goal" and name in COMPILE_GOAL):
        run = torch_run(config, x, y, num_classes, True)
        try:
            t = time.perf_counter()
            run()  # compiles here, outside timing
            print(f"  ({name}: torch.compile took {time.perf_counter() - t:.0f} s)", flush=True)
            rows["torch_compile"], per_call["torch_compile"] = run, 1
        except Exception as e:  # noqa: BLE001 - recorded in the table, the suite goes on
            errors["torch_compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return rows, per_call, errors, config


def parse_sets(items: list[str]) -> dict:
    """["mixed_precision=True", "model.impl=reference"] -> {key: Python value} (dlkit rows only)."""
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
    load_before = os.getloadavg()
    rows, per_call, errors, config = family_rows(name, args, rng)
    for run in rows.values():  # warm-up: compiles; also sizes the auto round count
        run()
    t = time.perf_counter()
    for run in rows.values():
        run()
    per_round = time.perf_counter() - t
    rounds = args.rounds or int(np.clip(args.budget_s / max(per_round, 1e-3), 5, 30))
    timed = time_round_robin(rows, rounds, warmup=1)
    ms = {r: 1e3 * timed[r][0] / per_call[r] for r in rows}
    cpu_ms = {r: 1e3 * timed[r][1] / per_call[r] for r in rows}
    ratios = {
        f"{t}/{d}": ms[t] / ms[d]
        for t in ("torch_eager", "torch_compile")
        if t in ms
        for d in rows
        if d.startswith("dlkit")
    }
    return {
        "family": name,
        "config": FAMILIES[name][0],
        "overrides": {
            k: list(v) if isinstance(v, tuple) else v for k, v in FAMILIES[name][1].items()
        },
        "batch_size": config.batch_size,
        "optimizer": config.optimizer.name,
        "steps_per_call": per_call,
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
        f"{rec['rounds']} rounds, load {load:.1f}",
        flush=True,
    )
    for row, v in ms.items():
        k = rec["steps_per_call"][row]
        print(f"  {row:14s} {v:9.2f} ms/step  cpu {rec['cpu_ms_per_step'][row]:9.2f}  (K={k})")
    for row, err in rec["errors"].items():
        print(f"  {row:14s} failed: {err}")
    for key, r in rec["ratios"].items():
        print(f"  ratio {key:28s} {r:5.2f}")


def main():
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
        "--no_policy", action="store_true", help="skip dlkit.cpu.configure() (XLA/allocator)"
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
        help="config override, e.g. mixed_precision=True (repeatable; torch reads shapes only)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    args = parser.parse_args()
    if args.threads:  # before jax starts
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
        if args.threads == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    if bad := [n for n in names if n not in FAMILIES]:
        raise SystemExit(f"unknown families {bad}; choose from: {', '.join(FAMILIES)}")
    from dlkit import cpu
    from dlkit.train import cpu_layout
    from dlkit.train.options import RunOptions

    sets = parse_sets(args.set)
    runs = [
        RunOptions.from_config(load_config(FAMILIES[n][0], {**FAMILIES[n][1], **sets}))
        for n in names
    ]
    if args.no_policy:
        os.environ["DLKIT_CPU_POLICY"] = "off"
    cpu_layout.start_cpu(*runs, verbose=False)  # before jax starts, as experiments/train.py
    policy = cpu.configure()  # the policy start_cpu applied (printed below)
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    info = machine()
    info["policy"] = policy.describe()
    info["threads_arg"], info["sets"] = args.threads, args.set
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
    print(f"dlkit CPU policy: {info['policy']}", flush=True)
    rng = np.random.default_rng(0)
    records, start = [], time.perf_counter()
    for name in names:
        rec = run_family(name, args, rng)
        print_family(rec)
        records.append(rec)
    print(f"suite wall time {time.perf_counter() - start:.0f} s")
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
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out / f"cpu_suite-{slug(info['model'])}-{stamp}.json"
    path.write_text(json.dumps({"machine": info, "families": records}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
