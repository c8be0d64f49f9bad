"""Kernels above dlkit.ops, each tested against its reference there: the Pallas flash attention
(interpret mode on CPU) and the oneDNN CPU conv, which importing this package registers as
`dlkit.ops.conv2d`'s impl "onednn" ("auto" takes it on CPU where it loads; nothing loads here)."""

from dlkit.kernels import cpu
from dlkit.kernels.cpu import dispatch
from dlkit.kernels.flash_attention import flash_attention, flash_attention_with_lse
from dlkit.ops import conv as _conv

_conv.register_impl("onednn", dispatch.conv2d, available=dispatch.accepts)

__all__ = ["cpu", "flash_attention", "flash_attention_with_lse"]
