"""The Transformer encoder classifier trains through the shared trainer (digits, rows as tokens)."""

from dlkit.train import default_config, train_and_evaluate


def test_encoder_classifier_learns_digits(tmp_path):
    c = default_config()
    c.model.name = "transformer_classifier"
    c.model.embed_dim = 32
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.dropout_rate = 0.1
    c.data.name = "digits"
    c.batch_size = 32
    c.num_train_steps = 120
    c.log_every_steps = c.eval_every_steps = c.checkpoint_every_steps = 120
    c.progress_bar = False
    c.optimizer.learning_rate = 3e-3
    metrics = train_and_evaluate(c, tmp_path)
    assert metrics["step"] == 120
    assert metrics["eval_accuracy"] > 0.6, metrics  # chance is 0.1
