"""The one train step and eval step shared by every model, and its static options.

Options (`StepOptions`, made from the config's `step` section by
`dlkit.train.options.TrainStepOptions.to_step_options`): gradient accumulation over micro-batches
(`lax.scan`), DP-SGD (per-example clipping + Gaussian noise, `vmap`), bf16 compute with fp32
parameters, `multi_step` for `steps_per_call` steps per dispatch (`lax.scan` over stacked
batches), `axis_name` for a per-device step under `jax.pmap` (dlkit.train.pmap_runner: gradient
and metric sums `psum`-ed, model state `pmean`-ed, dropout keys per device), and the `nonfinite`
policy: every step returns a "nonfinite" flag (non-finite loss or gradients) with its metric sums;
`skip_step` also keeps the state unchanged for such a step (like optax's apply_if_finite), `stop`
leaves the reaction to the loop at its next sync point. A state with an EMA (`state.ema_params`,
dlkit.train.ema) updates it once per optimizer step, after the params; a skipped step leaves it
unchanged too.
"""

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dlkit.errors import ConfigError
from dlkit.train import ema
from dlkit.train.state import TrainState
from dlkit.train.vmap import dp_noised_sum, per_example_grads

NONFINITE_POLICIES = ("stop", "skip_step")  # config.step.nonfinite's choices
NOISE_STREAM = 2**31 - 1  # DP noise key = fold_in(step key, NOISE_STREAM); devices use 0, 1, ...


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Static train-step options; the defaults are the plain step."""

    grad_accum_steps: int = 1
    dp_clip_norm: float | None = None  # DP-SGD when set
    dp_noise_multiplier: float = 0.0
    compute_dtype: str | None = None  # "bfloat16": bf16 compute, fp32 params and optimizer state
    nonfinite: str = "stop"  # stop | skip_step (state unchanged for a non-finite step)
    axis_name: str | None = None  # under jax.pmap: sums and model state combined over this axis


def _cast_floats(tree, dtype):
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _loss_fn(state, objective, options, rng, mutable):
    """(params, batch) -> (loss sum, (metric sums, new model state)); logits in fp32."""

    def loss_sum(params, batch):
        variables, inputs = state.variables(params), batch["inputs"]
        if options.compute_dtype:  # bf16 copies of params and inputs; grads flow back in fp32
            variables = {**variables, "params": _cast_floats(params, options.compute_dtype)}
            inputs = _cast_floats(inputs, options.compute_dtype)
        logits, new_model_state = state.apply_fn(
            variables, inputs, train=True, rngs={"dropout": rng}, mutable=mutable
        )
        loss, sums = objective(logits.astype(jnp.float32), batch)
        return loss * lax.stop_gradient(sums["count"]), (sums, new_model_state)

    return loss_sum


def _grad_sum(state, batch, objective, options, rng):
    """(sum over examples of d loss_i / d params, metric sums, new model state) on one batch."""
    mutable = list(state.model_state)
    loss_sum = _loss_fn(state, objective, options, rng, mutable)
    if options.dp_clip_norm is None:
        grads, (sums, new_ms) = jax.grad(loss_sum, has_aux=True)(state.params, batch)
        return grads, sums, dict(new_ms) if mutable else state.model_state
    if mutable:
        raise ConfigError(f"DP-SGD needs per-example gradients; {mutable} couple the examples")
    grads, (sums, _) = per_example_grads(loss_sum, state.params, batch, has_aux=True)
    return grads, jax.tree.map(lambda s: jnp.sum(s, 0), sums), state.model_state


def _accumulated(state, batch, objective, options, rng):
    """_grad_sum over grad_accum_steps strided micro-batches (rows i A + j), summed by scan."""
    a = options.grad_accum_steps
    if a == 1:
        return _grad_sum(state, batch, objective, options, rng)
    micro = jax.tree.map(
        lambda x: jnp.swapaxes(x.reshape(x.shape[0] // a, a, *x.shape[1:]), 0, 1), batch
    )

    def body(carry, xs):
        grads, sums, model_state = carry
        j, mb = xs
        g, s, ms = _grad_sum(
            state.replace(model_state=model_state),
            mb,
            objective,
            options,
            jax.random.fold_in(rng, j),
        )
        return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, sums, s), ms), None

    first = jax.tree.map(lambda x: x[0], micro)
    g0, s0, ms0 = _grad_sum(state, first, objective, options, jax.random.fold_in(rng, 0))
    rest = jax.tree.map(lambda x: x[1:], micro)
    (grads, sums, model_state), _ = lax.scan(body, (g0, s0, ms0), (jnp.arange(1, a), rest))
    return grads, sums, model_state


def train_step(
    state: TrainState, batch: dict, *, objective, options: StepOptions = StepOptions()
) -> tuple[TrainState, dict]:
    """One optimizer step on `batch`; returns the next state and metric sums."""
    step_rng = jax.random.fold_in(state.rng, state.step)  # dropout key: a function of (rng, step)
    axis = options.axis_name
    rng = step_rng if axis is None else jax.random.fold_in(step_rng, lax.axis_index(axis))
    grads, sums, model_state = _accumulated(state, batch, objective, options, rng)
    if options.dp_clip_norm is not None:  # per-example grads (B, ...) -> clipped sum + noise,
        noise_key = jax.random.fold_in(step_rng, NOISE_STREAM)  # one draw per step, all devices
        grads = dp_noised_sum(
            grads, options.dp_clip_norm, options.dp_noise_multiplier, noise_key, axis_name=axis
        )
    elif axis is not None:
        grads = lax.psum(grads, axis)
    if axis is not None:  # per-device sums -> the global batch's, on every device
        sums = lax.psum(sums, axis)
        model_state = _pmean_floats(model_state, axis)
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums["count"], 1.0), grads)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        opt_state=opt_state,
        model_state=model_state,
    )
    if state.ema_params is not None:  # static: the state's structure, not a config branch
        new_state = new_state.replace(
            ema_params=ema.update(state.ema_params, new_state.params, state.ema_decay)
        )
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(grad_norm) & jnp.isfinite(sums.get("loss", 0.0))
    if options.nonfinite == "skip_step":
        new_state = _keep_if_not(finite, new_state, state)
    flag = 1.0 - finite.astype(jnp.float32)
    return new_state, {**sums, "grad_norm": grad_norm * sums["count"], "nonfinite": flag}


def _pmean_floats(tree, axis: str):
    """Float leaves averaged over the pmap axis (replicas of, e.g., synced BatchNorm stats)."""
    return jax.tree.map(
        lambda x: lax.pmean(x, axis) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
    )


def _keep_if_not(finite, new_state: TrainState, state: TrainState) -> TrainState:
    """new_state where `finite`, else `state` with its step advanced (a skipped step)."""
    keep = ("params", "opt_state", "model_state", "ema_params")
    chosen = jax.tree.map(
        lambda n, o: jnp.where(finite, n, o),
        {k: getattr(new_state, k) for k in keep},
        {k: getattr(state, k) for k in keep},
    )
    return new_state.replace(**chosen)


def multi_step(state: TrainState, batches: dict, *, step_fn) -> tuple[TrainState, dict]:
    """K steps in one call: lax.scan of step_fn over batches stacked (K, B, ...); summed sums."""

    def body(s, batch):
        return step_fn(s, batch)

    state, stacked = lax.scan(body, state, batches)
    sums = jax.tree.map(lambda x: jnp.sum(x, 0), stacked)
    if "nonfinite" in stacked:  # 1-based index of the first non-finite step of the K; 0: none
        bad = stacked["nonfinite"] > 0
        first = jnp.where(jnp.any(bad), jnp.argmax(bad) + 1, 0)
        sums["nonfinite_first"] = first.astype(jnp.float32)
    return state, sums


def eval_step(state: TrainState, batch: dict, *, objective) -> dict:
    """Metric sums on `batch` in inference mode (BatchNorm running averages, no dropout)."""
    logits = state.apply_fn(state.variables(), batch["inputs"], train=False)
    _, sums = objective(logits, batch)
    return sums


def make_steps(objective, options: StepOptions = StepOptions()):
    """(train_step, eval_step) jitted; the train step donates the incoming state."""
    step = functools.partial(train_step, objective=objective, options=options)
    train = jax.jit(step, donate_argnums=0)
    evaluate = jax.jit(functools.partial(eval_step, objective=objective))
    return train, evaluate


def evaluate(eval_fn, state: TrainState, batches) -> dict:
    """Sums eval_fn's metric sums over batches (on host, float64)."""
    total: collections.Counter = collections.Counter()
    for batch in batches:
        for k, v in jax.device_get(eval_fn(state, batch)).items():
            total[k] += float(np.asarray(v, np.float64))
    return dict(total)
