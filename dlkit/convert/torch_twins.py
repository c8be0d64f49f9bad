"""PyTorch twins of dlkit's models with torchvision / nanoGPT parameter names (torchvision itself
is not needed): the layouts `from_torch` reads (tests/convert) and the PyTorch side of the
benchmarks (`twin`). Imports torch: import this module only where torch is installed.
"""

import math

import torch
from torch import nn

from dlkit.nn.vgg import DEPTHS


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm running statistics (so eval really uses them); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            scale = 1 / math.sqrt(fan_in) if p.ndim > 1 else 0.1
            p.copy_(
                torch.randn(p.shape, generator=g) * scale
                + (1.0 if "weight" in name and p.ndim == 1 else 0)
            )
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


# ---------------------------------------------------------------- torchvision ResNet layout


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


RESNET = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """torchvision.models.resnet.ResNet with base width `width` (64 in torchvision)."""

    def __init__(self, depth=18, num_classes=1000, width=64, in_channels=3, cifar_stem=False):
        super().__init__()
        block, layers = RESNET[depth]
        self.inplanes = width
        stem = (3, 1, 1) if cifar_stem else (7, 2, 3)  # CIFAR: 3x3 stride 1, no max pool
        self.conv1 = nn.Conv2d(in_channels, width, *stem, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.Identity() if cifar_stem else nn.MaxPool2d(3, 2, 1)
        for s, n in enumerate(layers):
            setattr(self, f"layer{s + 1}", self._make(block, width * 2**s, n, 1 if s == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def _make(self, block, planes, n, stride):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---------------------------------------------------------------- torchvision VGG / AlexNet


class VGG(nn.Module):
    def __init__(self, depths, widths, batch_norm, hidden, pool, num_classes, in_channels=3):
        super().__init__()
        layers, c = [], in_channels
        for depth, width in zip(depths, widths, strict=True):
            for _ in range(depth):
                layers.append(nn.Conv2d(c, width, 3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                c = width
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(c * pool * pool, hidden),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, f=(64, 192, 384, 256, 256), hidden=4096, pool=6, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, f[0], 11, 4, 2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(f[0], f[1], 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(f[1], f[2], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(f[2], f[3], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(f[3], f[4], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(f[4] * pool * pool, hidden),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- small nets

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": lambda: nn.GELU(approximate="tanh")}


def cnn_sequential(
    features=(8, 16),
    hidden=(32,),
    num_classes=10,
    *,
    kernel_size=3,
    padding="SAME",
    pool="max",
    activation="relu",
    dropout=0.0,
    image=(28, 28, 1),
):
    """dlkit's `cnn` as an nn.Sequential (keys 0.weight, 3.weight, ...: matched in order)."""
    act = ACTIVATIONS[activation]
    pads = (padding,) * len(features) if isinstance(padding, str | int) else tuple(padding)
    layers, size, c = [], image[0], image[2]
    for f, pad in zip(features, pads, strict=True):
        p = {"SAME": kernel_size // 2, "VALID": 0}.get(pad, pad)
        pool_layer = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        layers += [nn.Conv2d(c, f, kernel_size, padding=p), act(), pool_layer]
        c, size = f, (size + 2 * p - kernel_size + 1) // 2
    layers.append(nn.Flatten())
    width = c * size * size
    for h in (hidden,) if isinstance(hidden, int) else hidden:
        layers += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(width, h), act()]
        width = h
    layers += ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


class LeNet5(nn.Module):
    """Named like dlkit's layers (conv_0, conv_1, dense_0, dense_1, head)."""

    def __init__(self):
        super().__init__()
        self.conv_0 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv_1 = nn.Conv2d(6, 16, 5)
        self.dense_0 = nn.Linear(16 * 5 * 5, 120)
        self.dense_1 = nn.Linear(120, 84)
        self.head = nn.Linear(84, 10)

    def forward(self, x):
        pool = nn.functional.avg_pool2d
        x = pool(torch.tanh(self.conv_0(x)), 2)
        x = pool(torch.tanh(self.conv_1(x)), 2)
        x = torch.tanh(self.dense_0(torch.flatten(x, 1)))
        return self.head(torch.tanh(self.dense_1(x)))


def mlp_sequential(sizes=(784, 128, 64, 10), activation="relu", dropout=0.0):
    """dlkit's `mlp` on flattened inputs (keys 1.weight, 3.weight, ... without dropout)."""
    layers = [nn.Flatten()]
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
            layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers)


class CharLM(nn.Module):
    def __init__(self, cell="lstm", vocab=20, embed=8, hidden=16, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](
            embed, hidden, num_layers=layers, batch_first=True
        )
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        return self.head(self.rnn(self.embed(tokens))[0])


# ---------------------------------------------------------------- nanoGPT layout


def rotary(t):
    """dlkit's rope on t (B, heads, T, d): half-split pairs rotated by position angles."""
    d, n = t.shape[-1], t.shape[-2]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    ang = torch.arange(n, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos(), ang.sin()
    a, b = t[..., : d // 2], t[..., d // 2 :]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, e, h, bias, rope=False, dropout=0.0):
        super().__init__()
        self.c_attn = nn.Linear(e, 3 * e, bias=bias)
        self.c_proj = nn.Linear(e, e, bias=bias)
        self.h, self.rope, self.dropout = h, rope, dropout

    def forward(self, x):
        b, t, e = x.shape
        q, k, v = self.c_attn(x).split(e, dim=2)
        q, k, v = (z.view(b, t, self.h, e // self.h).transpose(1, 2) for z in (q, k, v))
        if self.rope:
            q, k = rotary(q), rotary(k)
        p = self.dropout if self.training else 0.0
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, e))


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias."""

    def __init__(self, e, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(e))
        self.bias = nn.Parameter(torch.zeros(e)) if bias else None

    def forward(self, x):
        return nn.functional.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class MLP(nn.Module):
    def __init__(self, e, bias, approximate, hidden=None):
        super().__init__()
        self.c_fc = nn.Linear(e, hidden or 4 * e, bias=bias)
        self.gelu = nn.GELU(approximate=approximate)
        self.c_proj = nn.Linear(hidden or 4 * e, e, bias=bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, e, h, bias, approximate, mlp_dim=None, rope=False, dropout=0.0):
        super().__init__()
        self.ln_1 = LayerNorm(e, bias)
        self.attn = CausalSelfAttention(e, h, bias, rope, dropout)
        self.ln_2 = LayerNorm(e, bias)
        self.mlp = MLP(e, bias, approximate, mlp_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """nanoGPT's model.py: learned positions, pre-LN blocks, fused qkv, tied lm_head; or rope
    (no wpe), a separate head with a bias (tied=False), dropout, mlp_dim (dlkit's options)."""

    def __init__(
        self,
        vocab=40,
        block_size=16,
        layers=2,
        heads=4,
        e=32,
        bias=True,
        approximate="none",
        *,
        mlp_dim=None,
        rope=False,
        tied=True,
        dropout=0.0,
    ):
        super().__init__()
        parts = dict(
            wte=nn.Embedding(vocab, e),
            h=nn.ModuleList(
                [Block(e, heads, bias, approximate, mlp_dim, rope, dropout) for _ in range(layers)]
            ),
            ln_f=LayerNorm(e, bias),
            drop=nn.Dropout(dropout),
        )
        if not rope:
            parts["wpe"] = nn.Embedding(block_size, e)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(e, vocab, bias=not tied)
        if tied:
            self.transformer.wte.weight = self.lm_head.weight

    def forward(self, idx):
        x = self.transformer.wte(idx)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(idx.shape[1]))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def hf_layout(state_dict: dict) -> dict:
    """A nanoGPT state_dict in Hugging Face GPT-2's Conv1D layout ((in, out) weights), with its
    causal-mask buffers and without the tied lm_head (as GPT-2 safetensors files are)."""
    out = {}
    for k, v in state_dict.items():
        if k == "lm_head.weight":
            continue
        conv1d = any(s in k for s in ("c_attn.weight", "c_proj.weight", "c_fc.weight"))
        out[k] = v.t().contiguous() if conv1d else v
    n = max(int(k.split(".")[2]) for k in out if ".h." in k) + 1
    for i in range(n):
        out[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 16, 16))
    return out


# ---------------------------------------------------------------- by dlkit model name


def twin(name: str, num_classes: int, example: tuple, **kw) -> nn.Module:
    """The PyTorch twin of models.get(name, num_classes=num_classes, **kw), training mode;
    example: one input's shape, (H, W, C) for images, (D,) for vectors, (T,) for tokens."""
    drop = kw.get("dropout_rate", 0.0)
    if name == "mlp":
        sizes = (math.prod(example), *kw.get("hidden_sizes", (128, 64)), num_classes)
        return mlp_sequential(sizes, kw.get("activation", "relu"), drop)
    if name in ("cnn", "lenet5"):
        lenet = dict(features=(6, 16), kernel_size=5, padding=("SAME", "VALID"), pool="avg")
        lenet.update(hidden=(120, 84), activation="tanh")
        cnn = {k: kw[k] for k in ("kernel_size", "padding", "pool", "activation") if k in kw}
        cnn = {**(lenet if name == "lenet5" else {}), **cnn, "dropout": drop, "image": example}
        features = kw.get("features", cnn.pop("features", (32, 64)))
        hidden = kw.get("hidden", cnn.pop("hidden", (256,)))
        return cnn_sequential(features, hidden, num_classes, **cnn)
    if name.startswith("vgg"):
        depths = kw.get("depths", DEPTHS[int(name[3:].removesuffix("_bn"))])
        widths, hidden = kw.get("widths", (64, 128, 256, 512, 512)), kw.get("hidden", 4096)
        bn = name.endswith("_bn")
        return VGG(depths, widths, bn, hidden, kw.get("pool_size", 7), num_classes, example[-1])
    if name.startswith("resnet"):
        depth, width, stem = int(name[6:]), kw.get("width", 64), kw.get("cifar_stem", False)
        return ResNet(depth, num_classes, width, example[-1], cifar_stem=stem)
    if name in ("char_lstm", "char_gru", "char_rnn"):
        sizes = (kw.get("embed_dim", 64), kw.get("hidden_size", 256), kw.get("num_layers", 2))
        return CharLM(name[5:], num_classes, *sizes)
    if name == "transformer_lm":
        e, act = kw.get("embed_dim", 128), kw.get("activation", "gelu")
        return GPT(
            num_classes,
            kw.get("max_len", 256),
            kw.get("num_layers", 2),
            kw.get("num_heads", 4),
            e,
            approximate="none" if act == "gelu_exact" else "tanh",
            mlp_dim=kw.get("mlp_dim") or 4 * e,
            rope=kw.get("positional", "learned") == "rope",
            tied=kw.get("tie_embeddings", False),
            dropout=drop,
        )
    raise ValueError(f"no PyTorch twin for model {name!r}")
