"""Kernels above dlkit.ops, each tested against its reference there: the Pallas flash attention
(interpret mode on CPU) and the oneDNN CPU conv, LSTM and batch norm, which importing this package
registers as the impl "onednn" of `dlkit.ops.conv2d`, `dlkit.ops.lstm_stack` and
`dlkit.ops.batch_norm`, and the native attention as `dlkit.ops.dot_product_attention`'s "cpu"
("auto" takes them on CPU where the library loads; nothing loads here)."""

from dlkit.kernels import cpu
from dlkit.kernels.cpu import dispatch
from dlkit.kernels.flash_attention import flash_attention, flash_attention_with_lse
from dlkit.ops import attention_dispatch as _attention
from dlkit.ops import conv as _conv
from dlkit.ops.batch_norm import register_impl as _register_batch_norm
from dlkit.ops.lstm_stack import register_impl as _register_lstm

_conv.register_impl("onednn", dispatch.conv2d, available=dispatch.accepts, fused=True)
_register_lstm("onednn", dispatch.lstm_stack, available=dispatch.lstm_accepts)
_register_batch_norm("onednn", dispatch.batch_norm, available=dispatch.batch_norm_accepts)
_attention.register_kernel("cpu", dispatch.attention, accepts=dispatch.attention_accepts)

__all__ = ["cpu", "flash_attention", "flash_attention_with_lse"]
