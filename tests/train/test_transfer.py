"""Transfer learning: init_from by path, head replacement, freezing (params and BatchNorm
statistics bit-identical), per-group learning rates, class subsets and exact resume; through the
new modules (init_from, freeze, paths, vectors) and, for the loop, the deprecated flat keys."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dlkit import data, paths
from dlkit.errors import ConfigError
from dlkit.train import freeze, init_from, objectives, restore_latest, train_and_evaluate
from dlkit.train.config import default_config
from dlkit.train.options import TransferOptions
from dlkit.train.state import create_train_state
from dlkit.train.step import make_steps


def mlp_config(**over):
    c = default_config()
    c.model.name = "mlp"
    c.model.hidden_sizes = (16, 8)
    c.data.name = "digits"
    c.batch_size = 16
    c.num_train_steps = 12
    c.log_every_steps = 6
    c.eval_every_steps = 12
    c.checkpoint_every_steps = 6
    c.progress_bar = False
    for k, v in over.items():
        c[k] = v
    return c


def finetune_config(source, **over):
    c = mlp_config(**over)
    c.init_from = str(source)
    c.init_skip = ("head/.*",)
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.num_train_examples = 100
    return c


def params_of(workdir):
    return restore_latest(workdir, items=("state",))["state"]["params"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 10-class mlp trained for 12 steps on the digits."""
    workdir = tmp_path_factory.mktemp("pretrained")
    train_and_evaluate(mlp_config(), workdir)
    return workdir


def test_match_variables_loads_skips_and_reports():
    target = {
        ("params", "body/kernel"): np.zeros((3, 4)),
        ("params", "head/kernel"): np.zeros((4, 5)),
    }
    source = {
        ("params", "enc/kernel"): np.ones((3, 4)),
        ("params", "head/kernel"): np.ones((4, 10)),
    }
    new, rows = init_from.match_variables(
        target, source, skip=("head/.*",), rename=("enc/(.*)->body/\\1",)
    )
    np.testing.assert_array_equal(new[("params", "body/kernel")], np.ones((3, 4)))
    np.testing.assert_array_equal(new[("params", "head/kernel")], np.zeros((4, 5)))
    status = {r[1]: r[3] for r in rows}
    assert status == {"body/kernel": "loaded", "head/kernel": "skipped"}
    table = init_from.format_table(rows)
    assert "loaded" in table and "<- enc" in table and "skipped" in table


def test_shape_mismatch_names_path_and_both_shapes():
    target = {("params", "head/kernel"): np.zeros((4, 5))}
    source = {("params", "head/kernel"): np.ones((4, 10))}
    with pytest.raises(ConfigError, match=r"params:head/kernel is \(4, 10\).*but \(4, 5\)"):
        init_from.match_variables(target, source)


def test_other_architecture_without_mapping_fails_clearly(pretrained, tmp_path):
    c = finetune_config(pretrained)
    c.model.hidden_sizes = (16,)  # no hidden_1, and head is (16, 5)
    with pytest.raises(
        ConfigError, match=r"does not fit this model.*hidden_1/kernel.*transfer.skip"
    ):
        train_and_evaluate(c, tmp_path)
    c = finetune_config(pretrained)
    c.model.hidden_sizes = (32, 8)
    with pytest.raises(ConfigError, match=r"hidden_0/kernel is \(64, 16\).*but \(64, 32\)"):
        train_and_evaluate(c, tmp_path / "b")


def test_finetune_new_head_frozen_layer_and_exact_resume(pretrained, tmp_path, capsys):
    over = {"num_train_steps": 14, "backbone_lr_scale": 0.1, "freeze": ("hidden_0/.*",)}
    full, split = tmp_path / "full", tmp_path / "split"
    m_full = train_and_evaluate(finetune_config(pretrained, **over), full)
    table = capsys.readouterr().out
    assert "hidden_0" in table and "loaded" in table and "skipped" in table
    before, after = params_of(pretrained), params_of(full)
    assert before["head"]["kernel"].shape == (8, 10)
    assert after["head"]["kernel"].shape == (8, 5)  # new head, 5 classes
    for name in ("kernel", "bias"):  # frozen: bit-identical; backbone at lr/10: trained
        np.testing.assert_array_equal(after["hidden_0"][name], before["hidden_0"][name])
        assert not np.array_equal(after["hidden_1"][name], before["hidden_1"][name])

    train_and_evaluate(finetune_config(pretrained, **over), split, stop_after_step=9)
    m_split = train_and_evaluate(finetune_config(pretrained, **over), split)  # resumes at 9
    assert "Resuming from the checkpoint at step 9" in capsys.readouterr().out
    a, b = restore_latest(full, items=("state",)), restore_latest(split, items=("state",))
    assert a["step"] == b["step"] == 14
    for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert m_full == m_split


def test_backbone_lr_scale_and_set_to_zero():
    options = TransferOptions.from_config(
        {"freeze": ("frozen/.*",), "skip": ("head/.*",), "backbone_lr_scale": 0.1}
    )
    base = optax.sgd(0.5)
    tx = freeze.wrap_optimizer(options, base)
    params = {k: {"w": jnp.ones(3)} for k in ("frozen", "body", "head")}
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["w"], -0.5)
    np.testing.assert_allclose(updates["body"]["w"], -0.05, rtol=1e-6)
    np.testing.assert_array_equal(updates["frozen"]["w"], 0.0)
    assert freeze.wrap_optimizer(TransferOptions(), base) is base
    with pytest.raises(ConfigError, match="backbone_lr_scale needs transfer.skip"):
        TransferOptions.from_config({"backbone_lr_scale": 0.1})


class BNNet(nn.Module):
    """dense -> BN -> relu -> dense -> BN -> relu -> head: two BatchNorms to freeze one of."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for i in range(2):
            x = nn.Dense(8, name=f"dense_{i}")(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, name=f"bn_{i}")(x))
        return nn.Dense(3, name="head")(x)


def test_frozen_batchnorm_statistics_bit_identical_and_inference_mode():
    options = TransferOptions(freeze=("dense_0/.*", "bn_0/.*"))
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 5))
    batch = {"inputs": x, "targets": jnp.arange(16) % 3}
    tx = freeze.wrap_optimizer(options, optax.sgd(0.1))
    state = freeze.freeze_state(create_train_state(BNNet(), tx, x[:1], seed=0), options)
    # make the running statistics non-trivial, so inference mode is distinguishable
    stats = jax.tree.map(lambda a: a + 0.5, state.model_state)
    state = state.replace(model_state=stats)
    before = jax.tree.map(np.asarray, {"params": state.params, **state.model_state})
    train_fn, _ = make_steps(objectives.get("cross_entropy"))
    for _ in range(3):
        state, _ = train_fn(state, batch)
    after = {"params": state.params, **state.model_state}
    for col, layer in [("params", "dense_0"), ("params", "bn_0"), ("batch_stats", "bn_0")]:
        for k in before[col][layer]:
            np.testing.assert_array_equal(np.asarray(after[col][layer][k]), before[col][layer][k])
    assert not np.array_equal(
        np.asarray(after["batch_stats"]["bn_1"]["mean"]), before["batch_stats"]["bn_1"]["mean"]
    )
    assert not np.array_equal(
        np.asarray(after["params"]["dense_1"]["kernel"]), before["params"]["dense_1"]["kernel"]
    )
    # bn_0 normalises with its running statistics in training: the activations after bn_0 in
    # train mode equal those in eval mode.
    variables = {"params": state.params, **state.model_state}
    inter = lambda train: state.apply_fn(  # noqa: E731
        variables,
        x,
        train=train,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda m, _: m.name == "bn_0",
    )[1]["intermediates"]["bn_0"]["__call__"][0]
    np.testing.assert_array_equal(np.asarray(inter(True)), np.asarray(inter(False)))


def test_freeze_pattern_matching_nothing_is_an_error():
    x = jnp.zeros((1, 5))
    state = create_train_state(BNNet(), optax.sgd(0.1), x, seed=0)
    with pytest.raises(ConfigError, match=r"freeze pattern 'backbone/\.\*' matches no parameter"):
        freeze.freeze_state(state, TransferOptions(freeze=("backbone/.*",)))
    with pytest.raises(ConfigError, match=r"matches every parameter; nothing trains"):
        freeze.freeze_state(state, TransferOptions(freeze=(".*",)))


def test_class_subset_relabels_and_samples():
    c = mlp_config()
    c.data.classes = (5, 6, 7, 8, 9)
    c.data.num_train_examples = 100
    ds = data.load(c.data)
    assert ds.num_classes == 5 and len(ds.train) == 100
    train_t = [int(ds.preprocess(ds.train[i])["targets"]) for i in range(len(ds.train))]
    test_raw = [int(ds.test[i]["label"]) for i in range(len(ds.test))]
    assert set(train_t) == set(range(5)) and set(test_raw) == {5, 6, 7, 8, 9}
    assert int(ds.preprocess(ds.test[0])["targets"]) == test_raw[0] - 5
    again = data.load(c.data)
    assert list(again.train.indices) == list(ds.train.indices)
    c.data.num_train_examples = 10_000
    with pytest.raises(ConfigError, match="num_train_examples=10000 must be in"):
        data.load(c.data)


def test_init_vectors_sets_the_embedding_by_vocabulary(tmp_path):
    from dlkit.data.text import tokenizer_from_assets
    from dlkit.train import build_model, create_state
    from dlkit.train.embeddings import save_vectors

    c = default_config()
    c.model.name, c.model.hidden_size, c.model.num_layers, c.model.embed_dim = "char_gru", 8, 1, 4
    c.data.name, c.data.seq_len, c.data.eval_fraction = "pydoc", 16, 0.01
    ds = data.load(c.data)
    vocab = tokenizer_from_assets(ds.assets).vocab
    words = [w for w in vocab if w != "x"]  # one character has no vector: drawn at random
    vectors = np.arange(len(words) * 4, dtype=np.float32).reshape(-1, 4)
    save_vectors(tmp_path, words, vectors)
    c.init_vectors = str(tmp_path)
    table = np.asarray(create_state(c, ds, build_model(c, ds)).params["embed"]["embedding"])
    for row, tok in enumerate(vocab):
        if tok != "x":
            np.testing.assert_array_equal(table[row], vectors[words.index(tok)])
    assert not np.any(np.all(table[vocab.index("x")] == vectors, axis=1))
    c.model.embed_dim = 6
    with pytest.raises(ConfigError, match=r"init_vectors: the table is \(\d+, 4\).*\(\d+, 6\)"):
        create_state(c, ds, build_model(c, ds))


def test_resnet_frozen_batchnorm_through_the_loop(tmp_path):
    from dlkit.train import build_model, create_state

    c = mlp_config(num_train_steps=3, checkpoint_every_steps=3, eval_every_steps=3)
    c.model = default_config().model
    c.model.name, c.model.stage_sizes, c.model.width = "resnet18", (1, 1), 4
    c.model.cifar_stem = True
    c.freeze = ("stage_0.*",)
    train_and_evaluate(c, tmp_path)
    ds = data.load(c.data)
    init = create_state(c, ds, build_model(c, ds))  # the run's step-0 state (same seed)
    end = restore_latest(tmp_path, items=("state",))["state"]
    flat0 = paths.flatten({"params": init.params, **init.model_state})
    flat1 = paths.flatten({"params": end["params"], **end["model_state"]})
    frozen = [k for k in flat1 if paths.matches(k[1], c.freeze)]
    assert any(k[0] == "batch_stats" for k in frozen) and any(k[0] == "params" for k in frozen)
    for k in frozen:
        np.testing.assert_array_equal(flat1[k], np.asarray(flat0[k]))
    trained = [k for k in flat1 if k not in frozen]
    assert all(not np.array_equal(flat1[k], np.asarray(flat0[k])) for k in trained if "bn" in k[1])


def test_init_from_sources_and_their_errors(pretrained, tmp_path):
    step, tree = init_from.read_checkpoint(pretrained / "checkpoints" / "12")  # one step folder
    assert step == 12 and tree["params"]["head"]["kernel"].shape == (8, 10)
    assert init_from.read_checkpoint(pretrained)[0] == 12  # the workdir: its latest step
    with pytest.raises(ConfigError, match="does not exist; give a workdir"):
        init_from.read_checkpoint(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no finished checkpoint in"):
        init_from.read_checkpoint(tmp_path)
    options = TransferOptions(init_from=str(pretrained), convert="torch")
    with pytest.raises(ConfigError, match="transfer.convert .torch. reads weights files"):
        init_from.read_source(options, {})
