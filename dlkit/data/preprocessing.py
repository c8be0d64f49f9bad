"""Input preprocessing named in the data config, for weights trained elsewhere.

data.preprocess = "imagenet"   inputs = (resize(image / 255) - mean) / std with torchvision's
                               ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
                               grey images are repeated to 3 channels
data.image_size = 64           the square side images are resized to (bilinear, half-pixel
                               centres as torch's F.interpolate(align_corners=False)); 0 = keep
"""

import dataclasses

import numpy as np

from dlkit.errors import ConfigError, choose

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _axis_weights(n_in: int, n_out: int):
    """(lo, hi, frac) for linear interpolation along one axis, half-pixel centres."""
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (x - lo).astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) float -> (size, size, C), bilinear without antialiasing."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    r0, r1, fr = _axis_weights(h, size)
    c0, c1, fc = _axis_weights(w, size)
    rows = image[r0] * (1 - fr)[:, None, None] + image[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def imagenet_inputs(image: np.ndarray, size: int = 0) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (size, size, 3) normalised with ImageNet's mean and std."""
    x = np.asarray(image, np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if size:
        x = resize_bilinear(x, int(size))
    return ((x - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)).astype(np.float32)


PREPROCESS = ("none", "imagenet")


def apply(dataset, data_config):
    """dataset with its preprocess replaced as data.preprocess / data.image_size ask (if set)."""
    kind = data_config.get("preprocess") or "none"
    size = int(data_config.get("image_size") or 0)
    if kind not in PREPROCESS:
        choose(dict.fromkeys(PREPROCESS), kind, "data.preprocess")
    if kind == "none":
        if size:
            raise ConfigError('data.image_size needs data.preprocess="imagenet"')
        return dataset
    first = dataset.train[0]
    if "image" not in first:
        raise ConfigError(f"data.preprocess={kind!r} needs an image dataset; {dataset.name} is not")
    base = dataset.preprocess

    def preprocess(example):
        return {**base(example), "inputs": imagenet_inputs(example["image"], size)}

    return dataclasses.replace(dataset, preprocess=preprocess)
