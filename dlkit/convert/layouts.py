"""Where each dlkit parameter lives in a PyTorch state_dict, per model family, and how it is
transformed (Linear (O, I) -> kernel (I, O); Conv2d (O, I, kh, kw) -> kernel (kh, kw, I, O); the
first Linear after a flatten has its inputs reordered from (C, H, W) to (H, W, C)).

A layout is `fn(name, model, target, state_dict | None) -> (rules, ignored)`: `target` maps
(collection, "a/b") to the dlkit shape, `rules` are `Rule`s and `ignored(key)` says which extra
state_dict keys carry nothing dlkit needs (BatchNorm's num_batches_tracked, attention-mask
buffers). With state_dict=None (to_torch) the canonical PyTorch names are used.
"""

import dataclasses
import math
import re
from collections.abc import Callable

import numpy as np

from dlkit.errors import ConfigError, choose


class ShapeMismatch(ValueError):
    """A tensor whose shape cannot be transformed as its rule says."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """torch keys <-> dlkit (collection, path) leaves; to_flax(arrays, dlkit shapes) -> arrays,
    to_torch(dlkit arrays) -> torch arrays. Keys in `optional` may be absent (e.g. bias=False):
    to_flax then gets None and fills zeros, which computes the same function."""

    torch: tuple[str, ...]
    flax: tuple[tuple[str, str], ...]
    to_flax: Callable
    to_torch: Callable
    optional: frozenset = frozenset()


def _need(a, ndim, what):
    if a.ndim != ndim:
        raise ShapeMismatch(f"{what} needs a {ndim}-D tensor")
    return a


def _fwd(kind, a, shape):
    if a is None:
        return np.zeros(shape, np.float32)
    if kind == "copy":
        return a
    if kind == "linear":
        return _need(a, 2, "a Linear weight").T
    if kind == "conv":
        return _need(a, 4, "a Conv2d weight").transpose(2, 3, 1, 0)
    _, c, h, w = kind  # ("flat", C, H, W): Linear after torch.flatten of a (C, H, W) map
    o = _need(a, 2, "a Linear weight").shape[0]
    if a.shape[1] != c * h * w:
        raise ShapeMismatch(
            f"a Linear after flatten of (C={c}, H={h}, W={w}) needs {c * h * w} inputs"
        )
    return a.reshape(o, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, o)


def _inv(kind, a):
    if kind == "copy":
        return a
    if kind == "linear":
        return a.T
    if kind == "conv":
        return a.transpose(3, 2, 0, 1)
    _, c, h, w = kind
    return a.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)


def leaf(tkey: str, fkey: tuple[str, str], kind="copy", optional=False) -> Rule:
    """One tensor <-> one leaf."""
    return Rule(
        (tkey,),
        (fkey,),
        lambda arrs, shapes: [_fwd(kind, arrs[0], shapes[0])],
        lambda arrs: [_inv(kind, arrs[0])],
        frozenset({tkey}) if optional else frozenset(),
    )


_LEAVES = {  # (collection, dlkit leaf) -> torch leaf
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("params", "embedding"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def module_rules(target, fmodule: str, tmodule: str, flat=None, optional_bias=False) -> list:
    """Rules for every leaf of dlkit module `fmodule` from torch module `tmodule` (prefix)."""
    rules = []
    for (col, path), shape in target.items():
        mod, _, name = path.rpartition("/")
        if mod != fmodule:
            continue
        tkey = f"{tmodule}.{_LEAVES[(col, name)]}"
        if name == "kernel":
            kind = flat or ("conv" if len(shape) == 4 else "linear")
        else:
            kind = "copy"
        rules.append(leaf(tkey, (col, path), kind, optional=optional_bias and name == "bias"))
    return rules


def modules(target) -> list[str]:
    """dlkit module paths in first-seen order."""
    return list(dict.fromkeys(path.rpartition("/")[0] for _, path in target))


def layer_order(mods: list[str]) -> list[str]:
    """conv_i, then dense_i / hidden_i, then head: the order of a sequential twin's layers."""

    def rank(m):
        kind, _, i = m.rpartition("_")
        return ({"conv": 0, "dense": 1, "hidden": 1}.get(kind, 2), int(i) if i.isdigit() else 0)

    return sorted(mods, key=rank)


def _flat_kind(target, fmodule: str, channels: int):
    rows = target[("params", f"{fmodule}/kernel")][0]
    side = math.isqrt(rows // channels)
    if side * side * channels != rows:
        raise ConfigError(
            f"{fmodule} takes {rows} inputs, not a square map of {channels} channels; "
            "from_torch reorders flattened (C, H, W) inputs for square maps only"
        )
    return ("flat", channels, side, side)


def _bn_ignored(key: str) -> bool:
    return key.endswith("num_batches_tracked")


# ---------------------------------------------------------------------------- vision


def resnet(name, model, target, sd):
    """torchvision: conv1/bn1, layer{s}.{i}.conv{j}/bn{j}/downsample.{0,1}, fc."""
    fixed = {"conv_stem": "conv1", "bn_stem": "bn1", "head": "fc"}
    rules = []
    for mod in modules(target):
        if mod in fixed:
            tmod = fixed[mod]
        else:
            m = re.fullmatch(r"stage_(\d+)_block_(\d+)/(conv|bn)_(\w+)", mod)
            s, i, kind, j = m.groups()
            tail = (
                {"conv": "downsample.0", "bn": "downsample.1"}[kind]
                if j == "short"
                else (f"{kind}{int(j) + 1}")
            )
            tmod = f"layer{int(s) + 1}.{i}.{tail}"
        rules += module_rules(target, mod, tmod)
    return rules, _bn_ignored


def vgg(name, model, target, sd):
    """torchvision: features.{k} in make_layers order (conv, [bn], relu, ..., pool), classifier."""
    rules, k = [], 0
    for s, depth in enumerate(model.depths):
        for i in range(depth):
            rules += module_rules(target, f"conv_{s}_{i}", f"features.{k}")
            k += 1
            if model.batch_norm:
                rules += module_rules(target, f"bn_{s}_{i}", f"features.{k}")
                k += 1
            k += 1  # ReLU
        k += 1  # MaxPool
    flat = _flat_kind(target, "dense_0", model.widths[-1])
    rules += module_rules(target, "dense_0", "classifier.0", flat=flat)
    rules += module_rules(target, "dense_1", "classifier.3")
    rules += module_rules(target, "head", "classifier.6")
    return rules, _bn_ignored


def alexnet(name, model, target, sd):
    """torchvision: features.{0,3,6,8,10} convs, classifier.{1,4,6} linears."""
    rules = []
    for i, k in enumerate((0, 3, 6, 8, 10)):
        rules += module_rules(target, f"conv_{i}", f"features.{k}")
    flat = _flat_kind(target, "dense_0", model.features[-1])
    rules += module_rules(target, "dense_0", "classifier.1", flat=flat)
    rules += module_rules(target, "dense_1", "classifier.4")
    rules += module_rules(target, "head", "classifier.6")
    return rules, _bn_ignored


def _torch_modules(sd) -> list[str]:
    """Modules with a weight, in state_dict order."""
    return [k[: -len(".weight")] for k in sd if k.endswith(".weight")]


def _name_map(fmods: list[str], sd) -> dict:
    """dlkit module -> torch module: the same names if all present, else the i-th weight."""
    if sd is None or all(f"{m}.weight" in sd for m in fmods):
        return {m: m for m in fmods}
    tmods = _torch_modules(sd)
    if len(tmods) != len(fmods):
        raise ConfigError(
            f"the state_dict has {len(tmods)} layers with weights ({', '.join(tmods)}) but the "
            f"model has {len(fmods)} ({', '.join(fmods)}); name them alike or match the settings"
        )
    return dict(zip(fmods, tmods, strict=True))


def cnn(name, model, target, sd):
    """A twin with layers named conv_i / dense_i / head like dlkit's, or an nn.Sequential (layers
    matched in order); the first Linear after flatten is reordered (C, H, W) -> (H, W, C)."""
    fmods = layer_order(modules(target))
    names = _name_map(fmods, sd)
    first_dense = next(m for m in fmods if not m.startswith("conv_"))
    rules = []
    for mod in fmods:
        flat = _flat_kind(target, mod, model.features[-1]) if mod == first_dense else None
        rules += module_rules(target, mod, names[mod], flat=flat)
    return rules, _bn_ignored


def mlp(name, model, target, sd):
    """Layers named hidden_i / head like dlkit's, or matched in order (inputs flattened as is)."""
    fmods = layer_order(modules(target))
    names = _name_map(fmods, sd)
    rules = []
    for mod in fmods:
        rules += module_rules(target, mod, names[mod])
    return rules, _bn_ignored


# ---------------------------------------------------------------------------- recurrent

_RNN_KEY = re.compile(r"(?:(.*)\.)?(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")


def recurrent_rules(cell: str, target, fprefix: str, tprefix: str) -> list:
    """nn.LSTM / nn.GRU / nn.RNN (tanh) keys -> dlkit.nn.Recurrent's layer_{i}[_bwd] leaves.

    LSTM and RNN: kernel = W_ih^T, w_h = W_hh^T, bias = b_ih + b_hh. GRU: b_hr and b_hz fold into
    the input bias, b_hn stays separate (it is multiplied by r). to_torch puts the folded biases in
    b_ih and zeros (or b_hn) in b_hh: the same function.
    """
    tp = f"{tprefix}." if tprefix else ""
    rules = []
    layers = sorted(
        {m.group(1) for _, p in target if (m := re.search(r"(layer_\d+(?:_bwd)?)/", p))},
        key=lambda s: (int(s.split("_")[1]), s),
    )
    for layer in layers:
        i, rev = layer.split("_")[1], "_reverse" if layer.endswith("_bwd") else ""
        keys = tuple(f"{tp}{n}_l{i}{rev}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        base = f"{fprefix}{layer}"
        fkeys = [("params", f"{base}/input/kernel"), ("params", f"{base}/w_h")]
        fkeys.append(("params", f"{base}/input/bias"))
        if cell == "gru":
            fkeys.append(("params", f"{base}/b_hn"))
        rules.append(
            Rule(
                keys,
                tuple(fkeys),
                _rnn_fwd(cell),
                _rnn_inv(cell),
                frozenset(keys[2:]),
            )
        )
    return rules


def _rnn_fwd(cell):
    def fwd(arrs, shapes):
        w_ih, w_hh, b_ih, b_hh = arrs
        _need(w_ih, 2, "weight_ih"), _need(w_hh, 2, "weight_hh")
        g = w_hh.shape[0]
        b_ih = np.zeros(g, np.float32) if b_ih is None else b_ih
        b_hh = np.zeros(g, np.float32) if b_hh is None else b_hh
        if cell != "gru":
            return [w_ih.T, w_hh.T, b_ih + b_hh]
        h = g // 3
        folded = b_ih + np.concatenate([b_hh[: 2 * h], np.zeros(h, np.float32)])
        return [w_ih.T, w_hh.T, folded, b_hh[2 * h :]]

    return fwd


def _rnn_inv(cell):
    def inv(arrs):
        kernel, w_h, bias = arrs[:3]
        b_hh = np.zeros_like(bias)
        if cell == "gru":
            b_hh[2 * (bias.shape[0] // 3) :] = arrs[3]
        return [kernel.T, w_h.T, bias, b_hh]

    return inv


def charlm(name, model, target, sd):
    """An embedding, nn.LSTM/GRU/RNN keys and a head (canonical names embed / rnn / head; a head
    without bias reads as a zero bias). Other names: the two weighted modules besides the RNN are
    told apart by shape (the embedding's (V, E) feeds the RNN's input size, the head's (V, H)
    reads its hidden size), else by state_dict order (the embedding comes before the RNN), else by
    bias (only the head has one)."""
    emb, rnn, head = "embed", "rnn", "head"
    if sd is not None:
        rnn_keys = [k for k in sd if _RNN_KEY.fullmatch(k)]
        rnn_prefixes = {_RNN_KEY.fullmatch(k).group(1) or "" for k in rnn_keys}
        if len(rnn_prefixes) == 1:
            rnn = rnn_prefixes.pop()
        if not all(f"{m}.weight" in sd for m in (emb, head)):
            emb, head = _embed_and_head(sd, rnn_keys, emb, head)
    rules = module_rules(target, "embed", emb)
    rules += module_rules(target, "head", head, optional_bias=True)
    return rules + recurrent_rules(model.cell, target, "rnn/", rnn), lambda k: False


def _embed_and_head(sd, rnn_keys, emb, head):
    """(embedding, head) module names among the non-RNN modules with a 2-D weight."""
    mods = list(
        dict.fromkeys(
            k[: -len(".weight")]
            for k in sd
            if k.endswith(".weight") and k not in rnn_keys and sd[k].ndim == 2
        )
    )
    if len(mods) != 2 or not rnn_keys:
        return emb, head
    a, b = mods
    w_ih0 = sd[next(k for k in rnn_keys if "weight_ih_l0" in k)]
    w_hh = sd[next(k for k in rnn_keys if "weight_hh_l" in k)]
    e_in, hidden = w_ih0.shape[1], w_hh.shape[1]
    if e_in != hidden:
        for x, y in ((a, b), (b, a)):
            if sd[f"{x}.weight"].shape[1] == e_in and sd[f"{y}.weight"].shape[1] == hidden:
                return x, y
    keys = list(sd)
    first_rnn = keys.index(rnn_keys[0])
    if keys.index(f"{a}.weight") < first_rnn < keys.index(f"{b}.weight"):
        return a, b
    if keys.index(f"{b}.weight") < first_rnn < keys.index(f"{a}.weight"):
        return b, a
    biased = [m for m in mods if f"{m}.bias" in sd]
    if len(biased) == 1:  # an embedding has no bias
        return (b, a) if biased == [a] else (a, b)
    return emb, head


# ---------------------------------------------------------------------------- transformer


def transformer_lm(name, model, target, sd):
    """nanoGPT / GPT-2 keys ([transformer.]wte, wpe, h.{i}.ln_1, attn.c_attn (fused q, k, v),
    attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, ln_f; lm_head). nn.Linear (out, in) weights
    (nanoGPT) and Hugging Face Conv1D (in, out) weights are told apart by c_attn's shape; missing
    biases (nanoGPT bias=False) become zeros."""
    if (model.num_kv_heads or model.num_heads) != model.num_heads:
        raise ConfigError("GPT-2 layouts have as many key/value heads as query heads")
    p = "transformer."
    if sd is not None and "wte.weight" in sd:
        p = ""
    e, h = model.embed_dim, model.num_heads
    d = e // h
    conv1d = False
    if sd is not None:
        c_attn = sd.get(f"{p}h.0.attn.c_attn.weight")
        conv1d = c_attn is not None and c_attn.shape == (e, 3 * e) and e != 3 * e
    lin = "copy" if conv1d else "linear"  # Conv1D already stores (in, out)

    def io(w):  # torch weight -> (in, out)
        return w if conv1d else _need(w, 2, "a Linear weight").T

    def oi(k):  # (in, out) -> torch weight
        return k if conv1d else k.T

    rules = [_embedding_rule(p, model.tie_embeddings)]
    if ("params", "pos/table/embedding") in target:
        rules.append(leaf(f"{p}wpe.weight", ("params", "pos/table/embedding")))
    for i in range(model.num_layers):
        t, f = f"{p}h.{i}", f"block_{i}"
        for tn, fn in (("ln_1", "ln_attn"), ("ln_2", "ln_mlp")):
            rules.append(leaf(f"{t}.{tn}.weight", ("params", f"{f}/{fn}/scale")))
            rules.append(leaf(f"{t}.{tn}.bias", ("params", f"{f}/{fn}/bias"), optional=True))
        qkv = tuple(("params", f"{f}/attention/{n}/kernel") for n in ("query", "key", "value"))
        rules.append(
            Rule(
                (f"{t}.attn.c_attn.weight",),
                qkv,
                lambda a, s: [w.reshape(e, h, d) for w in np.split(io(a[0]), 3, axis=1)],
                lambda a: [oi(np.concatenate([w.reshape(e, e) for w in a], axis=1))],
            )
        )
        qkv_b = tuple(("params", f"{f}/attention/{n}/bias") for n in ("query", "key", "value"))
        rules.append(
            Rule(
                (f"{t}.attn.c_attn.bias",),
                qkv_b,
                lambda a, s: (
                    [np.zeros(x, np.float32) for x in s]
                    if a[0] is None
                    else [b.reshape(h, d) for b in np.split(a[0], 3)]
                ),
                lambda a: [np.concatenate([b.reshape(e) for b in a])],
                frozenset({f"{t}.attn.c_attn.bias"}),
            )
        )
        rules.append(
            Rule(
                (f"{t}.attn.c_proj.weight",),
                (("params", f"{f}/attention/out/kernel"),),
                lambda a, s: [io(a[0]).reshape(h, d, e)],
                lambda a: [oi(a[0].reshape(e, e))],
            )
        )
        rules.append(
            leaf(f"{t}.attn.c_proj.bias", ("params", f"{f}/attention/out/bias"), optional=True)
        )
        for tn, fn in (("c_fc", "up"), ("c_proj", "down")):
            rules.append(leaf(f"{t}.mlp.{tn}.weight", ("params", f"{f}/mlp/{fn}/kernel"), lin))
            rules.append(
                leaf(f"{t}.mlp.{tn}.bias", ("params", f"{f}/mlp/{fn}/bias"), optional=True)
            )
    rules.append(leaf(f"{p}ln_f.weight", ("params", "ln_final/scale")))
    rules.append(leaf(f"{p}ln_f.bias", ("params", "ln_final/bias"), optional=True))
    if not model.tie_embeddings:
        rules.append(leaf("lm_head.weight", ("params", "head/kernel"), "linear"))
        rules.append(leaf("lm_head.bias", ("params", "head/bias"), optional=True))

    def ignored(key):  # causal-mask buffers of older GPT-2 / nanoGPT without flash attention
        return bool(re.fullmatch(r".*\.attn\.(bias|masked_bias)", key)) and (
            sd is None or sd[key].ndim != 1
        )

    return rules, ignored


def _embedding_rule(p: str, tied: bool) -> Rule:
    """wte -> embed/embedding; when tied, either wte or lm_head.weight (safetensors' save_model
    keeps only one of two shared tensors) fills it, and both present must be equal."""
    wte, head = f"{p}wte.weight", "lm_head.weight"
    if not tied:
        return leaf(wte, ("params", "embed/embedding"))

    def fwd(arrs, shapes):
        a, b = arrs
        if a is None and b is None:
            raise ConfigError(
                f"neither {wte!r} nor {head!r} is in the state_dict: nothing fills "
                f"embed/embedding {shapes[0]}"
            )
        if a is not None and b is not None and not np.array_equal(a, b):
            raise ConfigError(
                f"{head} differs from {wte} (untied weights): build the model with "
                "tie_embeddings=False"
            )
        return [a if a is not None else b]

    return Rule(
        (wte, head),
        (("params", "embed/embedding"),),
        fwd,
        lambda a: [a[0], a[0]],
        frozenset({wte, head}),
    )


_AXES = [  # (dlkit path pattern, the setting behind each axis of the leaf; None: not one)
    (r"embed/embedding", ("num_classes", "embed_dim")),
    (r"pos/table/embedding", ("max_len", "embed_dim")),
    (r"head/kernel", (None, "num_classes")),
    (r"head/bias", ("num_classes",)),
    (r".*/attention/(query|key|value)/kernel", ("embed_dim", "num_heads", None)),
    (r".*/attention/(query|key|value)/bias", ("num_heads", None)),
    (r".*/attention/out/kernel", ("num_heads", None, "embed_dim")),
    (r".*/mlp/up/kernel", ("embed_dim", "mlp_dim")),
    (r".*/mlp/up/bias", ("mlp_dim",)),
    (r".*/mlp/down/kernel", ("mlp_dim", "embed_dim")),
    (r".*/(ln_\w+|mlp/down|attention/out)/(scale|bias)", ("embed_dim",)),
    (r"rnn/.*/(input/kernel|w_h)", ("embed_dim or hidden_size", "hidden_size")),
]


def setting_hint(name: str, path: str, got: tuple, want: tuple) -> str:
    """Which model setting makes leaf `path` `want`-shaped where the weights say `got`."""
    for pattern, axes in _AXES:
        if re.fullmatch(pattern, path) and len(axes) == len(got) == len(want):
            for axis, g, w in zip(axes, got, want, strict=True):
                if g != w and axis:
                    return (
                        f"the weights were trained with another {axis} (the file's {g}, the "
                        f"model's {w}); pass the settings the weights were trained with"
                    )
    if path.startswith("head/"):
        return "pass the num_classes the weights were trained with"
    return "pass the width settings the weights were trained with (see docs/API.md)"


def family(name: str):
    """The layout function for a registry model name (ConfigError if it has no PyTorch twin)."""
    if name.startswith("resnet"):
        return resnet
    if name.startswith("vgg"):
        return vgg
    table = {
        "alexnet": alexnet,
        "cnn": cnn,
        "lenet5": cnn,
        "mlp": mlp,
        "linear": mlp,
        "char_rnn": charlm,
        "char_lstm": charlm,
        "char_gru": charlm,
        "transformer_lm": transformer_lm,
    }
    if name not in table:
        names = ["resnet18..152", "vgg11..19[_bn]", *table]
        choose(dict.fromkeys(names), name, "model with a PyTorch layout")
    return table[name]
