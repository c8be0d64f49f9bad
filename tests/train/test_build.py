"""dlkit.train.build from RunOptions equals the same build from the ConfigDict it parses."""

import jax
import numpy as np

from dlkit import data
from dlkit.train import build, objectives
from dlkit.train.config import default_config
from dlkit.train.options import RunOptions
from dlkit.train.step import make_steps


def test_typed_build_equals_the_config_path():
    c = default_config()
    c.model.hidden_sizes, c.batch_size = (8,), 16
    c.freeze, c.init_skip, c.backbone_lr_scale = ("hidden_0/.*",), ("head/.*",), 0.5
    options = RunOptions.from_config(c)
    dataset = data.load(options.data)
    model = build.build_model(options, dataset)
    assert model == build.build_model(c, dataset)
    typed, legacy = (
        build.create_state(options, dataset, model),
        build.create_state(c, dataset, model),
    )
    kernel, head = (np.asarray(typed.params[k]["kernel"]) for k in ("hidden_0", "head"))
    other = build.create_state(options, dataset, model, seed=3).params["head"]["kernel"]
    assert not np.array_equal(np.asarray(other), head)
    batch = jax.tree.map(np.asarray, dataset.example_batch(16))
    train, _ = make_steps(objectives.get("cross_entropy"))
    trees = [jax.device_get(train(state, batch)[0].checkpoint_tree()) for state in (typed, legacy)]
    for a, b in zip(jax.tree.leaves(trees[0]), jax.tree.leaves(trees[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(trees[0]["params"]["hidden_0"]["kernel"], kernel)  # frozen
    assert not np.array_equal(trees[0]["params"]["head"]["kernel"], head)  # trained


def test_build_model_reads_a_saved_model_section_and_its_old_keys():
    """load() builds a checkpoint's model this way: the section alone, old keys migrated,
    num_classes from the section, else the given one."""
    section = {"name": "char_lstm", "hidden_size": 8, "num_layers": 1, "fused_lstm": False}
    model = build.build_model({"model": section}, num_classes=5)
    assert model.fused is False and model.num_classes == 5
    assert (
        build.build_model({"model": {**section, "num_classes": 7}}, num_classes=5).num_classes == 7
    )
