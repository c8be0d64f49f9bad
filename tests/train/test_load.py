"""train.load (three kinds of path, any step), save_params / load_params, Checkpointer(None)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlkit import ConfigError, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    c = train.default_config()
    c.num_train_steps, c.checkpoint_every_steps, c.eval_every_steps = 4, 2, 4
    c.log_every_steps, c.batch_size, c.progress_bar = 2, 32, False
    c.model.hidden_sizes = (16,)
    metrics = train.train_and_evaluate(c, str(workdir))
    return workdir, metrics


def test_load_any_path_and_step(run):
    workdir, metrics = run
    latest = train.load(workdir)
    assert latest.step == 4 and latest.config.model.hidden_sizes == [16]
    assert isinstance(latest, train.Loaded)
    for path in (workdir / "checkpoints", workdir / "checkpoints" / "4"):
        same = train.load(path)
        assert same.step == 4
        jax.tree.map(np.testing.assert_array_equal, same.variables, latest.variables)
    older = train.load(workdir, step=2)
    assert older.step == 2 and train.load(workdir / "checkpoints" / "2").step == 2
    assert not np.array_equal(
        older.variables["params"]["head"]["kernel"], latest.variables["params"]["head"]["kernel"]
    )
    x = jnp.zeros((3, 8, 8, 1))  # digits
    assert latest.model.apply(latest.variables, x, train=False).shape == (3, 10)


def test_load_errors_speak_to_api_users(run, tmp_path):
    workdir, _ = run
    with pytest.raises(ConfigError, match=r"no checkpoint of step 3 in .*; it has \[2, 4\]"):
        train.load(workdir, step=3)
    with pytest.raises(ConfigError, match="no checkpoints in .*train_and_evaluate"):
        train.load(tmp_path)
    with pytest.raises(ConfigError, match="does not exist; give a training workdir"):
        train.load(tmp_path / "nothing")
    metrics_file = workdir / "metrics.jsonl"
    assert metrics_file.is_file()
    want = rf"is a file, not a run; give the training workdir \({re.escape(str(workdir))}\)"
    with pytest.raises(ConfigError, match=want):
        train.load(metrics_file)


def test_save_and_load_params(run, tmp_path):
    variables = train.load(run[0]).variables
    path = train.save_params(tmp_path / "params", variables)
    back = train.load_params(path)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
    with pytest.raises(ConfigError, match="exists; choose a new path or pass overwrite=True"):
        train.save_params(path, variables)
    train.save_params(path, {"w": jnp.ones(2)}, overwrite=True)
    np.testing.assert_array_equal(train.load_params(path)["w"], np.ones(2))
    with pytest.raises(ConfigError, match="not a params folder"):
        train.load_params(tmp_path / "missing")


def test_checkpointer_without_config(tmp_path):
    ckpt = train.Checkpointer(tmp_path / "ckpts", async_save=False)
    ckpt.save(1, {"w": jnp.arange(3.0)}, {"next_index": 0}, None, {})
    ckpt.close()
    ckpt = train.Checkpointer(tmp_path / "ckpts")
    assert ckpt.latest_step() == 1 and ckpt.read_json(1, "config") == {}
    ckpt.check_compatible(1, None)
    ckpt.close()
