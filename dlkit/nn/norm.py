"""BatchNorm: flax.linen.BatchNorm (same fields, variables and running averages) whose training
path is `dlkit.ops.batch_norm` (on CPU the native C++ kernel where its library loads), with ReLU
and a residual optionally fused.

Inference (running averages), a named axis (statistics synced over pmap), a mask, or a layout the
op does not cover (features not last, no scale or bias, an explicit dtype, fast variance off) run
flax's own code, then the ReLU. freeze.py and the pmap runner intercept it as an nn.BatchNorm.
"""

import flax.linen as nn
import jax.numpy as jnp

from dlkit.ops.batch_norm import batch_norm


class BatchNorm(nn.BatchNorm):
    """flax's BatchNorm; `relu=True` returns relu(bn(x) (+ residual)) in one op (the residual: a
    call argument of x's shape); `impl` picks the op's impl."""

    relu: bool = False
    impl: str = "auto"  # auto | reference | a registered one (dlkit.ops.batch_norm)

    def _op_covers(self, x, use_running_average, mask) -> bool:
        return (
            not use_running_average
            and self.axis_name is None
            and mask is None
            and self.axis in (-1, x.ndim - 1)
            and self.use_scale
            and self.use_bias
            and self.dtype is None
            and self.use_fast_variance
            and self.force_float32_reductions
            and x.ndim >= 2
        )

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None, residual=None):
        at_call = use_running_average
        use_running_average = nn.module.merge_param(
            "use_running_average", self.use_running_average, at_call
        )
        if not self._op_covers(x, use_running_average, mask):
            y = super().__call__(x, at_call, mask=mask)
            y = y if residual is None else y + residual
            return nn.relu(y) if self.relu else y
        shape = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), shape)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), shape)
        scale = self.param("scale", self.scale_init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, shape, self.param_dtype)
        y, mean, var = batch_norm(x, scale, bias, self.epsilon, self.relu, residual, impl=self.impl)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y
