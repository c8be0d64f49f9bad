"""data.preprocess="imagenet" and data.image_size: ImageNet normalisation and bilinear resize."""

import numpy as np
import pytest

from dlkit import ConfigError, data
from dlkit.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, imagenet_inputs


def test_resize_and_normalise_match_torch():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    got = imagenet_inputs(img, 20)
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = (x[0].permute(1, 2, 0).numpy() - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-5)


def test_grey_digits_become_normalised_rgb():
    ds = data.load({"name": "digits", "preprocess": "imagenet", "image_size": 16})
    x = ds.example_batch(2)["inputs"]
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_allclose(
        x[..., 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0],
        x[..., 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1],
        atol=1e-6,
    )
    with pytest.raises(ConfigError, match="unknown data.preprocess 'imagent'.*did you mean"):
        data.load({"name": "digits", "preprocess": "imagent"})
    with pytest.raises(ConfigError, match="image_size needs"):
        data.load({"name": "digits", "image_size": 16})
