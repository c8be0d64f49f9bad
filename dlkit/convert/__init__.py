"""Weights from the world: PyTorch / safetensors state_dicts <-> dlkit variables.

`from_torch(name, state_dict_or_path, **model_kwargs)` returns variables for
`models.get(name, **model_kwargs)`; `load_pretrained(folder)` reads a Hugging Face GPT-2 folder or
a nanoGPT ckpt.pt with its settings; torch is imported only to read .pth/.pt/.bin files.
"""

from dlkit.convert.io import is_weights_file, read_state_dict, save_safetensors
from dlkit.convert.pretrained import load_pretrained, save_pretrained
from dlkit.convert.pytorch import from_torch, recurrent_from_torch, to_torch

__all__ = [
    "from_torch",
    "to_torch",
    "recurrent_from_torch",
    "load_pretrained",
    "save_pretrained",
    "read_state_dict",
    "save_safetensors",
    "is_weights_file",
]
