"""Reading PyTorch weights without requiring PyTorch: state_dicts, .pth/.pt and .safetensors files.

Every reader returns {key: numpy array}; floating arrays become float32 (the models' dtype).
"""

import pathlib

import numpy as np
from safetensors.numpy import load_file, save_file

from dlkit.errors import ConfigError

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors", ".npz")
_WRAPPERS = ("state_dict", "model_state_dict", "model")  # common checkpoint dict wrappers


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; bf16 has no numpy dtype
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        value = value.numpy()
    arr = np.asarray(value)
    # ml_dtypes' bfloat16 / float8 (safetensors.numpy of a half-precision file) are not np.floating
    low = arr.dtype.name.startswith(("bfloat16", "float8"))
    return arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) or low else arr


def is_weights_file(path) -> bool:
    """True for a path whose suffix is a weights format dlkit reads (.pth .pt .safetensors ...)."""
    return pathlib.Path(str(path)).suffix.lower() in SUFFIXES


def _torch_load(path: pathlib.Path):
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"reading {path} needs PyTorch (pip install torch); or save the weights as "
            ".safetensors, which dlkit reads without it"
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle of arbitrary objects is refused by weights_only=True
        raise ConfigError(
            f"cannot read {path} with torch.load(weights_only=True): {str(e).splitlines()[0]}; "
            "save a plain state_dict (torch.save(model.state_dict(), path))"
        ) from None


def read_state_dict(source) -> dict[str, np.ndarray]:
    """A state_dict (tensors or numpy arrays) or a .pth/.pt/.bin/.safetensors/.npz path ->
    {key: numpy array}; a leading "module." (DataParallel) or "_orig_mod." (torch.compile) is
    dropped from every key."""
    if isinstance(source, str | pathlib.Path):
        path = pathlib.Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            raw = load_file(str(path))
        elif suffix == ".npz":
            with np.load(path) as f:
                raw = dict(f)
        elif suffix in TORCH_SUFFIXES:
            raw = _torch_load(path)
        else:
            raise ConfigError(f"{path}: unknown weights format; use one of {', '.join(SUFFIXES)}")
    else:
        raw = source
    if not hasattr(raw, "items"):
        raise ConfigError(f"expected a state_dict (key -> tensor), got {type(raw).__name__}")
    for wrapper in _WRAPPERS:  # {"state_dict": {...}, "epoch": 3} style checkpoints
        if isinstance(raw.get(wrapper), dict) and not hasattr(raw[wrapper], "shape"):
            raw = raw[wrapper]
            break
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            raise ConfigError(f"state_dict entry {key!r} is a dict, not a tensor")
        out[key.removeprefix("module.").removeprefix("_orig_mod.")] = _to_numpy(value)
    return out


def save_safetensors(state_dict: dict, path) -> None:
    """Writes {key: array} (e.g. to_torch's result) as a .safetensors file (no torch needed)."""
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, str(path))
