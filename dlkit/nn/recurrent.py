"""Recurrent cells (SimpleRNN, LSTM, GRU) and layers that scan them over time.

A cell owns its weights: `input` (Dense, kernel (D, G*H) and bias (G*H,)) and `w_h` (H, G*H), plus
`b_hn` (H,) for the GRU. Unmasked LSTM and GRU layers run as one fused wavefront scan with a
hand-written backward (dlkit.ops.lstm_stack / gru_stack); otherwise a layer projects all time steps
at once (one matmul), then `lax.scan`s the pure step of dlkit.ops.recurrent over time. Carries:
h (B, H), or (c, h) for the LSTM.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlkit import errors
from dlkit.errors import ConfigError
from dlkit.nn.dropout import Dropout
from dlkit.ops import recurrent as rops
from dlkit.ops.gru_stack import gru_stack
from dlkit.ops.lstm_stack import lstm_stack


def stacked_orthogonal(key, shape, dtype=jnp.float32):
    """(H, G*H) made of G independent orthogonal (H, H) blocks, one per gate."""
    hidden, total = shape
    keys = jax.random.split(key, total // hidden)
    init = nn.initializers.orthogonal()
    return jnp.concatenate([init(k, (hidden, hidden), dtype) for k in keys], axis=1)


class _Cell(nn.Module):
    """Shared weights and methods; subclasses set `kind` and `_bind` (weights -> pure step)."""

    hidden_size: int
    kind = "rnn"

    def _bias_init(self, key, shape, dtype=jnp.float32):
        return jnp.zeros(shape, dtype)

    def setup(self):
        gates = rops.NUM_GATES[self.kind] * self.hidden_size
        self.input = nn.Dense(gates, bias_init=self._bias_init, name="input")
        self.w_h = self.param("w_h", stacked_orthogonal, (self.hidden_size, gates))

    def project(self, x: jax.Array) -> jax.Array:
        """xw = x W_x + b; x (..., D) -> (..., G*H), for every time step at once."""
        return self.input(x)

    def stacked_weights(self, in_dim: int, dtype=jnp.float32):
        """([W_x; W_h] (D + H, G*H), b): what dlkit.ops.lstm_stack takes for this cell."""
        self.input(jnp.zeros((0, in_dim), dtype))  # no work; creates the Dense's params on init
        p = self.input.variables["params"]
        return jnp.concatenate([p["kernel"], self.w_h], axis=0), p["bias"]

    def step_fn(self):
        """The pure step (carry, xw) -> (carry, h) with this cell's recurrent weights bound."""
        return functools.partial(rops.rnn_step, w_h=self.w_h)

    def __call__(self, carry, x: jax.Array):
        """One time step: x (B, D) -> (carry, h (B, H))."""
        return self.step_fn()(carry, self.project(x))

    def initialize_carry(self, batch_size: int, dtype=jnp.float32):
        """Zeros: h (B, H), or (c, h) for the LSTM."""
        return rops.zero_carry(self.kind, batch_size, self.hidden_size, dtype)


class SimpleRNNCell(_Cell):
    """h_t = tanh(W_h h_{t-1} + W_x x_t + b)."""

    kind = "rnn"


class LSTMCell(_Cell):
    """LSTM with gates (i, f, g, o); the forget-gate bias starts at `forget_bias`."""

    kind = "lstm"
    forget_bias: float = 1.0

    def _bias_init(self, key, shape, dtype=jnp.float32):
        h = self.hidden_size
        return jnp.zeros(shape, dtype).at[h : 2 * h].set(self.forget_bias)

    def step_fn(self):
        return functools.partial(rops.lstm_step, w_h=self.w_h)


class GRUCell(_Cell):
    """GRU with gates (r, z, n) as PyTorch: n = tanh(W_in x + b_in + r (W_hn h + b_hn))."""

    kind = "gru"

    def setup(self):
        super().setup()
        self.b_hn = self.param("b_hn", nn.initializers.zeros, (self.hidden_size,))

    def step_fn(self):
        return functools.partial(rops.gru_step, w_h=self.w_h, b_hn=self.b_hn)

    def gru_params(self, in_dim: int, dtype=jnp.float32):
        """(W_x (D, 3H), W_h (H, 3H), b (3H,), b_hn (H,)): what dlkit.ops.gru_stack takes."""
        self.input(jnp.zeros((0, in_dim), dtype))  # no work; creates the Dense's params on init
        p = self.input.variables["params"]
        return p["kernel"], self.w_h, p["bias"], self.b_hn


CELLS = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


def get_cell(name: str):
    """The cell class for "rnn", "lstm" or "gru"."""
    return errors.choose(CELLS, name, "recurrent cell")


class Recurrent(nn.Module):
    """Stacked, optionally bidirectional layers; x (B, T, D) -> (ys (B, T, H*dirs), state).

    `state` is a tuple over layers of carries, each a pair (forward, backward) when bidirectional.
    With `lengths` (B,) or `mask` (B, T), padded steps leave the state untouched and give zero
    outputs, so the final state is each row's state at its last real token.
    """

    hidden_size: int
    num_layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = False
    dropout_rate: float = 0.0
    unroll: int = 1
    fused: bool = True  # unmasked LSTM / GRU layers use ops.lstm_stack / ops.gru_stack
    impl: str = "auto"  # ops.lstm_stack's impl for fused LSTM stacks: auto|wavefront|onednn

    def setup(self):
        cls = get_cell(self.cell)
        if self.num_layers < 1:
            raise ConfigError(f"Recurrent needs num_layers >= 1, got {self.num_layers}")
        self.fwd = [cls(self.hidden_size, name=f"layer_{i}") for i in range(self.num_layers)]
        if self.bidirectional:
            self.bwd = [
                cls(self.hidden_size, name=f"layer_{i}_bwd") for i in range(self.num_layers)
            ]
        self.dropout = Dropout(self.dropout_rate)

    def initialize_carry(self, batch_size: int, dtype=jnp.float32):
        """Zero state for every layer (and direction)."""
        one = rops.zero_carry(self.cell, batch_size, self.hidden_size, dtype)
        return tuple((one, one) if self.bidirectional else one for _ in range(self.num_layers))

    def _fused(self) -> bool:
        """Whether unmasked layers of this cell run as a fused stack (ops.lstm_stack/gru_stack)."""
        return self.fused and self.cell in ("lstm", "gru")

    def _stack(self, cells, xs, state):
        """The fused stack of `cells` over xs (T, B, D) -> (final carries, hs (T, B, H))."""
        params, in_dim = [], xs.shape[-1]
        for cell in cells:
            get = cell.stacked_weights if self.cell == "lstm" else cell.gru_params
            params.append(get(in_dim, xs.dtype))
            in_dim = self.hidden_size
        if self.cell == "gru":
            return gru_stack(xs, state, params, unroll=self.unroll)
        ws, bs = zip(*params, strict=True)
        return lstm_stack(xs, state, ws, bs, unroll=self.unroll, impl=self.impl)

    def _run(self, cell, x, carry, mask, reverse):
        if self._fused() and mask is None:  # see ops.lstm_stack / ops.gru_stack
            xs = jnp.swapaxes(x, 0, 1)[::-1] if reverse else jnp.swapaxes(x, 0, 1)  # (T, B, D)
            (carry,), hs = self._stack([cell], xs, (carry,))
            return carry, jnp.swapaxes(hs[::-1] if reverse else hs, 0, 1)
        xw = cell.project(x)  # (B, T, G*H): the input matmul of all steps at once
        carry = jax.tree.map(lambda a: a.astype(xw.dtype), carry)  # e.g. bf16 x, f32 params
        return rops.scan_steps(
            cell.step_fn(), carry, xw, mask=mask, reverse=reverse, unroll=self.unroll
        )

    def _wavefront(self, x, state):
        """All layers in one fused-stack scan (unmasked, one direction, no dropout between)."""
        finals, hs = self._stack(self.fwd, jnp.swapaxes(x, 0, 1), state)
        return jnp.swapaxes(hs, 0, 1), finals

    def __call__(self, x, *, initial_state=None, lengths=None, mask=None, train: bool = False):
        if x.ndim != 3:
            raise ValueError(f"Recurrent expects x (B, T, D), got {x.shape}")
        if lengths is not None:
            mask = rops.lengths_to_mask(lengths, x.shape[1])
        state = (
            self.initialize_carry(x.shape[0], x.dtype) if initial_state is None else initial_state
        )
        if len(state) != self.num_layers:
            raise ValueError(f"initial_state has {len(state)} layers, expected {self.num_layers}")
        dropout = train and self.dropout_rate and self.num_layers > 1
        if self._fused() and mask is None and not (self.bidirectional or dropout):
            return self._wavefront(x, state)
        finals = []
        for i in range(self.num_layers):
            if i and self.dropout_rate:
                x = self.dropout(x, deterministic=not train)
            if self.bidirectional:
                cf, yf = self._run(self.fwd[i], x, state[i][0], mask, False)
                cb, yb = self._run(self.bwd[i], x, state[i][1], mask, True)
                x, carry = jnp.concatenate([yf, yb], axis=-1), (cf, cb)
            else:
                carry, x = self._run(self.fwd[i], x, state[i], mask, False)
            finals.append(carry)
        return x, tuple(finals)

    def step(self, state, x: jax.Array):
        """One time step through every layer (forward direction only); x (B, D) -> (state, h)."""
        if self.bidirectional:
            raise ValueError("Recurrent.step runs forward in time; a bidirectional stack cannot")
        new = []
        for i in range(self.num_layers):
            carry, x = self.fwd[i](state[i], x)
            new.append(carry)
        return tuple(new), x


SimpleRNN = functools.partial(Recurrent, cell="rnn")
LSTM = functools.partial(Recurrent, cell="lstm")
GRU = functools.partial(Recurrent, cell="gru")
