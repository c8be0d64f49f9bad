"""Writes text with a trained language model: restores the latest checkpoint in --workdir.

  python experiments/sample.py --workdir=workdirs/char_lstm_shakespeare --prompt="ROMEO:" \
      --num_chars=500 --temperature=0.8 --top_k=0 --seed=0
"""

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (with checkpoints/).")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text the model continues (at least one character).")
_NUM_CHARS = flags.DEFINE_integer("num_chars", 500, "How many tokens to generate.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = all).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the sampler.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.ERROR)  # Orbax warns about metadata on every restore
    from dlkit.errors import ConfigError
    from dlkit.nn.sampling import generate_text
    from dlkit.train.load import load_language_model as load_from_workdir

    try:
        model, variables, tokenizer = load_from_workdir(_WORKDIR.value)
        text = generate_text(
            model,
            variables,
            tokenizer,
            _PROMPT.value,
            _NUM_CHARS.value,
            seed=_SEED.value,
            temperature=_TEMPERATURE.value,
            top_k=_TOP_K.value,
        )
    except ValueError as e:  # an empty prompt, a model that cannot generate: one line, exit 2
        raise ConfigError(str(e)) from e
    print(text)


if __name__ == "__main__":
    from dlkit import cli

    flags.mark_flag_as_required("workdir")
    cli.run(main)
