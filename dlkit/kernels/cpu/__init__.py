"""Native CPU kernels: 2-D convolution and LSTM layers through oneDNN, a fused batch norm
(+ ReLU, + residual) and flash attention in C++, as XLA FFI custom calls (x86-64 Linux).

The shared library is built by `pip install -e .` (setup.py); when it is missing or does not load,
`available()` is False and `why_unavailable()` says why in one line. Nothing loads at import.
"""

from dlkit.kernels.cpu.attention import attention
from dlkit.kernels.cpu.conv import conv2d, default_threads
from dlkit.kernels.cpu.library import available, onednn_version, why_unavailable
from dlkit.kernels.cpu.lstm import lstm_stack
from dlkit.kernels.cpu.norm import batch_norm

__all__ = [
    "attention",
    "available",
    "batch_norm",
    "conv2d",
    "default_threads",
    "lstm_stack",
    "onednn_version",
    "why_unavailable",
]
