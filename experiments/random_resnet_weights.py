"""Writes a random-weight ResNet state_dict in torchvision's layout (conv1, bn1, layer1.0.conv1,
..., fc), for trying weight import and experiments/transfer.py --weights without a download.

  python experiments/random_resnet_weights.py --out=/tmp/resnet18.safetensors
  python experiments/random_resnet_weights.py --depth=50 --out=/tmp/resnet50.pth   # needs torch

The weights are dlkit's initialisation (Kaiming convolutions) with random BatchNorm scales and
running statistics, converted by dlkit.convert.to_torch; real torchvision files load the same way.
"""

import pathlib

from absl import flags

_OUT = flags.DEFINE_string("out", None, "Output file: .safetensors (no torch needed) or .pth.")
_DEPTH = flags.DEFINE_enum("depth", "18", ["18", "34", "50", "101", "152"], "ResNet depth.")
_WIDTH = flags.DEFINE_integer("width", 64, "Base width (torchvision: 64).")
_CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classifier outputs (ImageNet: 1000).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
flags.mark_flag_as_required("out")


def random_resnet(depth: int, width: int, num_classes: int, seed: int) -> dict:
    """{torchvision key: numpy array} of a randomly initialised ResNet."""
    import jax
    import numpy as np

    from dlkit import convert, models

    kw = dict(num_classes=num_classes, width=width)
    init = jax.jit(models.get(f"resnet{depth}", **kw).init)  # one compile, not one per op
    variables = init(jax.random.key(seed), np.zeros((1, 32, 32, 3), np.float32))
    sd = convert.to_torch(f"resnet{depth}", variables, **kw)
    rng = np.random.default_rng(seed)
    for k, v in sd.items():
        if k.endswith("running_mean") or (k.endswith("bias") and "bn" in k):
            sd[k] = rng.normal(0, 0.1, v.shape).astype(np.float32)
        elif k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
    return sd


def main(argv):
    from dlkit.convert import save_safetensors
    from dlkit.errors import ConfigError

    del argv
    out = pathlib.Path(_OUT.value)
    sd = random_resnet(int(_DEPTH.value), _WIDTH.value, _CLASSES.value, _SEED.value)
    if out.suffix == ".safetensors":
        save_safetensors(sd, out)
    elif out.suffix in (".pth", ".pt"):
        try:
            import torch
        except ImportError:
            raise ConfigError("writing .pth needs PyTorch; use a .safetensors name") from None
        torch.save({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, out)
    else:
        raise ConfigError(f"--out={out}: use a .safetensors or .pth name")
    print(f"wrote {out}: resnet{_DEPTH.value} (width {_WIDTH.value}), {len(sd)} tensors")


if __name__ == "__main__":
    from dlkit.cli import run

    run(main)
