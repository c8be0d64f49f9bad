"""Character language models: embedding -> recurrent layers -> logits over the vocabulary.

`char_rnn`, `char_lstm`, `char_gru` differ only in the cell. Besides `__call__` (teacher forcing,
tokens (B, T) -> logits (B, T, V)) they implement the sampling contract of dlkit.nn.sampling:
`init_carry(batch_size, max_len)` and `step(carry, tokens (B,)) -> (carry, logits (B, V))`.
"""

import functools

import flax.linen as nn
import jax

from dlkit.nn.dropout import Dropout
from dlkit.nn.recurrent import Recurrent


class CharRNNLM(nn.Module):
    """logits_t = W_o h_t + b_o, h_t = RNN(embed(x_1..x_t)); tokens (B, T) int -> (B, T, V)."""

    num_classes: int
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embed_dim: int = 64
    dropout_rate: float = 0.0
    unroll: int = 1
    fused: bool = True  # LSTM / GRU layers as one fused stack (Recurrent.fused)
    impl: str = "auto"  # the fused LSTM stack's impl (Recurrent.impl): auto|wavefront|onednn

    def setup(self):
        self.embed = nn.Embed(self.num_classes, self.embed_dim, name="embed")
        self.rnn = Recurrent(
            self.hidden_size,
            self.num_layers,
            self.cell,
            dropout_rate=self.dropout_rate,
            unroll=self.unroll,
            fused=self.fused,
            impl=self.impl,
            name="rnn",
        )
        self.dropout = Dropout(self.dropout_rate)
        self.head = nn.Dense(self.num_classes, name="head")

    def __call__(self, tokens: jax.Array, *, train: bool = False) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"{type(self).__name__} expects tokens (B, T), got {tokens.shape}")
        ys, _ = self.rnn(self.embed(tokens), train=train)  # (B, T, H)
        if self.dropout_rate:
            ys = self.dropout(ys, deterministic=not train)
        return self.head(ys)  # (B, T, V)

    def init_carry(self, batch_size: int, max_len: int):
        """Zero recurrent state for every layer (max_len is unused: the state has a fixed size)."""
        del max_len
        return self.rnn.initialize_carry(batch_size)

    def step(self, carry, tokens: jax.Array):
        """Feeds one token per row: tokens (B,) int -> (carry, logits (B, V))."""
        if tokens.ndim != 1:
            raise ValueError(f"step expects tokens (B,), got {tokens.shape}")
        carry, h = self.rnn.step(carry, self.embed(tokens))
        return carry, self.head(h)


MODELS = {
    "char_rnn": functools.partial(CharRNNLM, cell="rnn"),
    "char_lstm": functools.partial(CharRNNLM, cell="lstm"),
    "char_gru": functools.partial(CharRNNLM, cell="gru"),
}
