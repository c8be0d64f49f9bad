"""from_torch: PyTorch eval outputs vs dlkit on the converted weights, file formats, errors."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch)")

import convert_cases as cc  # noqa: E402

from dlkit import ConfigError, convert, models  # noqa: E402
from dlkit.convert import torch_twins as tw  # noqa: E402

# Forward passes in CI; the deeper variants are checked by layout (round trip) below and by
# `python tests/convert/convert_cases.py` (the BUILD_NOTES table).
FORWARD = [
    "resnet18",
    "resnet50",
    "vgg11",
    "vgg11_bn",
    "alexnet",
    "cnn",
    "lenet5",
    "mlp",
    "char_lstm",
    "char_gru",
    "char_rnn",
    "transformer_lm (nanoGPT)",
    "transformer_lm (nanoGPT bias=False)",
    "transformer_lm (GPT-2 Conv1D)",
]


@pytest.mark.parametrize("case", FORWARD)
def test_matches_pytorch_eval_outputs(case):
    got, want = cc.run_case(case)
    assert got.shape == want.shape
    err = np.abs(got - want).max()
    # float32 sums of a few hundred terms, differently ordered: ~1e-6 of the output scale
    assert err <= 1e-5 * max(1.0, np.abs(want).max()), (case, err)


@pytest.mark.parametrize(
    "case", ["resnet34", "resnet101", "resnet152", "vgg13_bn", "vgg16", "vgg19_bn"]
)
def test_deeper_layouts_round_trip(case):
    """Every torchvision key is read and to_torch writes the same state_dict back."""
    name, kw, make, _ = cc.CASES[case]
    sd = {k: v.numpy() for k, v in tw.randomize(make()).state_dict().items()}
    back = convert.to_torch(name, convert.from_torch(name, sd, **kw), **kw)
    assert sorted(back) == sorted(sd)
    for k, v in sd.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], v, err_msg=k)


@pytest.mark.parametrize("case", ["resnet18", "alexnet", "char_gru", "transformer_lm (nanoGPT)"])
def test_to_torch_loads_into_the_twin(case):
    """dlkit variables -> to_torch -> twin.load_state_dict(strict=True) -> the same outputs."""
    name, kw, make, kind = cc.CASES[case]
    torch.manual_seed(1)
    src = tw.randomize(make(), seed=1)
    variables = convert.from_torch(name, src.state_dict(), **kw)
    sd = convert.to_torch(name, variables, **kw)
    twin = make()
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    x = torch.from_numpy(cc.inputs(kind))
    with torch.no_grad():
        np.testing.assert_allclose(twin.eval()(x).numpy(), src(x).numpy(), rtol=1e-5, atol=1e-5)


def test_pth_and_safetensors_files(tmp_path):
    _, kw, make, _ = cc.CASES["resnet18"]
    twin = tw.randomize(make())
    torch.save(twin.state_dict(), tmp_path / "r.pth")
    convert.save_safetensors(
        {k: v.numpy() for k, v in twin.state_dict().items()}, tmp_path / "r.safetensors"
    )
    a = convert.from_torch("resnet18", tmp_path / "r.pth", **kw)
    b = convert.from_torch("resnet18", str(tmp_path / "r.safetensors"), **kw)
    c = convert.from_torch("resnet18", twin.state_dict(), **kw)
    for x, y in ((a, b), (a, c)):
        for p, q in zip(
            __import__("jax").tree.leaves(x), __import__("jax").tree.leaves(y), strict=True
        ):
            np.testing.assert_array_equal(p, q)
    torch.save({"state_dict": twin.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    convert.from_torch("resnet18", tmp_path / "wrapped.pt", **kw)


def test_safetensors_and_import_need_no_torch(tmp_path):
    """`import dlkit`, `import dlkit.convert` and reading .safetensors work with torch absent."""
    _, kw, make, _ = cc.CASES["lenet5"]
    sd = {k: v.numpy() for k, v in tw.randomize(make()).state_dict().items()}
    path = tmp_path / "lenet.safetensors"
    convert.save_safetensors(sd, path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dlkit, dlkit.convert\n"
        f"v = dlkit.convert.from_torch('lenet5', {str(path)!r})\n"
        "print(sorted(v['params']))\n"
        f"try:\n    dlkit.convert.from_torch('lenet5', {str(tmp_path / 'x.pth')!r})\n"
        "except dlkit.ConfigError as e: print(e)\n"
    )
    (tmp_path / "x.pth").write_bytes(b"")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "['conv_0', 'conv_1', 'dense_0', 'dense_1', 'head']" in out.stdout
    assert "needs PyTorch" in out.stdout


def test_errors_name_the_key_and_both_shapes():
    twin = tw.randomize(tw.ResNet(18, 10, 8))
    sd = {k: v.numpy() for k, v in twin.state_dict().items()}
    with pytest.raises(
        ConfigError,
        match=r"fc\.bias \(10,\) gives head/bias \(10,\) but the model's is \(5,\)",
    ):
        convert.from_torch("resnet18", sd, num_classes=5, width=8)
    with pytest.raises(ConfigError, match=r"key 'layer1.0.bn1.running_var' is missing .* \(8,\)"):
        convert.from_torch(
            "resnet18",
            {k: v for k, v in sd.items() if k != "layer1.0.bn1.running_var"},
            num_classes=10,
            width=8,
        )
    with pytest.raises(ConfigError, match=r"unknown key 'extra.weight' \(3,\)"):
        convert.from_torch("resnet18", {**sd, "extra.weight": np.zeros(3)}, num_classes=10, width=8)
    with pytest.raises(
        ConfigError, match="unknown model with a PyTorch layout 'resnt18'.*did you mean"
    ):
        convert.from_torch("resnt18", sd)
    with pytest.raises(ConfigError, match="does not exist"):
        convert.from_torch("resnet18", "/nonexistent/weights.pth")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_bidirectional_stacks(cell):
    """nn.LSTM / nn.GRU / nn.RNN, 2 layers, bidirectional -> dlkit.nn.Recurrent."""
    from dlkit.nn import Recurrent

    torch.manual_seed(0)
    ref = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        5, 6, num_layers=2, batch_first=True, bidirectional=True
    )
    x = np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)
    with torch.no_grad():
        want = ref(torch.from_numpy(x))[0].numpy()
    params = convert.recurrent_from_torch(ref.state_dict(), cell)
    got, _ = Recurrent(6, 2, cell, bidirectional=True).apply({"params": params}, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    with pytest.raises(ConfigError, match="is not an nn"):
        convert.recurrent_from_torch(ref.state_dict(), "gru" if cell == "lstm" else "lstm")


def test_models_build_from_the_same_kwargs():
    """The result feeds models.get(name, **kwargs) directly (no extra keys, all leaves)."""
    import jax

    name, kw, make, kind = cc.CASES["vgg11_bn"]
    v = convert.from_torch(name, tw.randomize(make()).state_dict(), **kw)
    fresh = models.get(name, **kw).init(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
    assert jax.tree.structure(v) == jax.tree.structure(fresh)
