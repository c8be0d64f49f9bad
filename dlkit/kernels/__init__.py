"""Pallas kernels, each tested against its reference in dlkit.ops (interpret mode on CPU)."""

from dlkit.kernels.flash_attention import flash_attention, flash_attention_with_lse

__all__ = ["flash_attention", "flash_attention_with_lse"]
