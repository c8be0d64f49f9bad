"""A trained language model back from its workdir: model, variables and tokenizer."""

from dlkit import models
from dlkit.data.text import tokenizer_from_assets
from dlkit.errors import ConfigError
from dlkit.train.checkpoint import restore_latest


def load_from_workdir(workdir):
    """(model, variables, tokenizer) from the latest checkpoint of a training workdir."""
    saved = restore_latest(workdir, items=("config", "assets", "state"))
    tokenizer = tokenizer_from_assets(saved.get("assets") or {})
    model = models.from_config(saved["config"]["model"], tokenizer.vocab_size)
    if not hasattr(model, "step"):
        name = saved["config"]["model"]["name"]
        raise ConfigError(f"model {name!r} has no step(): it cannot generate text")
    state = saved["state"]
    variables = {"params": state["params"], **(state.get("model_state") or {})}
    return model, variables, tokenizer
