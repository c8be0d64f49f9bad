"""Word vectors as a starting point: set an embedding table from saved word2vec vectors
(`TransferOptions.vectors`, `vectors_param`) for a text dataset's tokenizer vocabulary."""

import logging

import jax
import jax.numpy as jnp

from dlkit.data.tokenizers import Tokenizer
from dlkit.errors import ConfigError
from dlkit.paths import few, flatten, unflatten
from dlkit.train.embeddings import embedding_table

log = logging.getLogger("dlkit")


def init_vectors(state, options, dataset, seed: int):
    """state with params[options.vectors_param] (V, D) built from options.vectors (if set);
    tokens without a vector are drawn at random with `seed`."""
    if not options.vectors:
        return state
    assets = getattr(dataset, "assets", None) or {}
    if "tokenizer" not in assets:
        raise ConfigError("transfer.vectors needs a text dataset (its assets hold no tokenizer)")
    param = options.vectors_param
    flat = flatten({"params": state.params})
    if ("params", param) not in flat:
        paths = [p for _, p in flat]
        raise ConfigError(f"transfer.vectors_param {param!r} is not a parameter: {few(paths, 8)}")
    like = flat[("params", param)]
    table, report = embedding_table(
        Tokenizer.from_dict(assets["tokenizer"]), options.vectors, seed=seed
    )
    if table.shape != like.shape:
        raise ConfigError(
            f"init_vectors: the table is {table.shape} (vocabulary, vector size) but {param} is "
            f"{tuple(like.shape)}; set the model's embedding size to {table.shape[1]}"
        )
    flat[("params", param)] = jnp.asarray(table, like.dtype)
    params = unflatten(flat)["params"]
    if jax.process_index() == 0:
        log.info(
            f"init_vectors {options.vectors} -> {param}: {report['matched']} of "
            f"{report['vocab_size']} tokens found (missing e.g. {report['missing_examples'][:5]})"
        )
    return state.replace(params=params, opt_state=state.tx.init(params))
