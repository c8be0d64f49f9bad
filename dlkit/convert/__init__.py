"""Weights from the world: PyTorch / safetensors state_dicts <-> dlkit variables.

`from_torch(name, state_dict_or_path, **model_kwargs)` returns variables for
`models.get(name, **model_kwargs)`; torch is imported only to read .pth/.pt files.
"""

from dlkit.convert.io import is_weights_file, read_state_dict, save_safetensors
from dlkit.convert.pytorch import from_torch, recurrent_from_torch, to_torch

__all__ = [
    "from_torch",
    "to_torch",
    "recurrent_from_torch",
    "read_state_dict",
    "save_safetensors",
    "is_weights_file",
]
