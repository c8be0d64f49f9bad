"""Per model: a random-weight PyTorch twin, dlkit settings and inputs; `max_error` runs both."""

import numpy as np
import torch

from dlkit.convert import torch_twins as tw

VISION = dict(num_classes=10)
VGG_KW = dict(num_classes=10, widths=(4, 8, 8, 16, 16), hidden=32, pool_size=2)
ALEX_KW = dict(num_classes=10, features=(8, 16, 16, 16, 16), hidden=32, pool_size=2)
LM_KW = dict(num_classes=20, hidden_size=16, num_layers=2, embed_dim=8)
GPT_KW = dict(
    num_classes=40,
    embed_dim=32,
    num_layers=2,
    num_heads=4,
    max_len=16,
    tie_embeddings=True,
    layer_norm_epsilon=1e-5,
)


def _vgg(depth, bn):
    from dlkit.nn.vgg import DEPTHS

    return lambda: tw.VGG(DEPTHS[depth], VGG_KW["widths"], bn, 32, 2, 10)


CASES = {  # name: (dlkit name, dlkit kwargs, twin factory, input kind and size)
    **{
        f"resnet{d}": (
            f"resnet{d}",
            dict(VISION, width=8),
            lambda d=d: tw.ResNet(d, 10, 8),
            ("image", 3, 32),
        )
        for d in (18, 34, 101, 152)
    },
    "resnet50": ("resnet50", dict(VISION, width=8), lambda: tw.ResNet(50, 10, 8), ("image", 3, 64)),
    **{
        f"vgg{d}{'_bn' if bn else ''}": (
            f"vgg{d}{'_bn' if bn else ''}",
            VGG_KW,
            _vgg(d, bn),
            ("image", 3, 64),
        )
        for d in (11, 13, 16, 19)
        for bn in (False, True)
    },
    "alexnet": (
        "alexnet",
        ALEX_KW,
        lambda: tw.AlexNet((8, 16, 16, 16, 16), 32, 2, 10),
        ("image", 3, 100),
    ),
    "cnn": (
        "cnn",
        dict(num_classes=10, features=(8, 16), hidden=(32,)),
        tw.cnn_sequential,
        ("image", 1, 28),
    ),
    "lenet5": ("lenet5", dict(num_classes=10), tw.LeNet5, ("image", 1, 28)),
    "mlp": (
        "mlp",
        dict(num_classes=10, hidden_sizes=(128, 64)),
        tw.mlp_sequential,
        ("image", 1, 28),
    ),
    **{
        f"char_{c}": (f"char_{c}", LM_KW, lambda c=c: tw.CharLM(c, 20, 8, 16, 2), ("tokens", 20, 7))
        for c in ("lstm", "gru", "rnn")
    },
    "transformer_lm (nanoGPT)": (
        "transformer_lm",
        dict(GPT_KW, activation="gelu_exact"),
        lambda: tw.GPT(40, 16, 2, 4, 32),
        ("tokens", 40, 16),
    ),
    "transformer_lm (nanoGPT bias=False)": (
        "transformer_lm",
        dict(GPT_KW, activation="gelu_exact"),
        lambda: tw.GPT(40, 16, 2, 4, 32, bias=False),
        ("tokens", 40, 16),
    ),
    "transformer_lm (GPT-2 Conv1D)": (
        "transformer_lm",
        dict(GPT_KW, activation="gelu"),
        lambda: tw.GPT(40, 16, 2, 4, 32, approximate="tanh"),
        ("tokens", 40, 16),
    ),
}


def inputs(kind):
    rng = np.random.default_rng(1)
    if kind[0] == "tokens":
        return rng.integers(0, kind[1], size=(2, kind[2])).astype(np.int64)
    return rng.normal(size=(2, kind[1], kind[2], kind[2])).astype(np.float32)  # NCHW


def run_case(case: str, source=None):
    """(dlkit output, torch output) for a case; source overrides the state_dict (e.g. a file)."""
    from dlkit import convert, models

    name, kw, make, kind = CASES[case]
    torch.manual_seed(0)
    twin = tw.randomize(make())
    x = inputs(kind)
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    sd = twin.state_dict()
    if "Conv1D" in case:
        sd = tw.hf_layout(sd)
    variables = convert.from_torch(name, sd if source is None else source(sd), **kw)
    xj = x.astype(np.int32) if kind[0] == "tokens" else x.transpose(0, 2, 3, 1)
    got = np.asarray(models.get(name, **kw).apply(variables, xj, train=False))
    return got, want


def max_error(case: str) -> tuple[float, float]:
    """(max abs error, max abs error / max abs output)."""
    got, want = run_case(case)
    err = float(np.abs(got - want).max())
    return err, err / float(np.abs(want).max())


if __name__ == "__main__":  # python tests/convert/convert_cases.py: the BUILD_NOTES table
    import platform

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| model | max abs error | relative to max abs output |\n| --- | --- | --- |")
    for case in CASES:
        err, rel = max_error(case)
        print(f"| {case} | {err:.2e} | {rel:.2e} |", flush=True)
