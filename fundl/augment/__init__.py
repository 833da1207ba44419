"""Data augmentation: random image transforms, mixup, and the ``Augment`` layer.

Every transform takes one channels-last image (H, W, C) and a PRNG key first —
``transform(key, image, *, options)`` — and returns an image of the same shape and
dtype, the same for the same key. They are pure JAX, so they run under ``jit`` and
``vmap``; :func:`batched` maps one over a batch (N, H, W, C) with a key per example.
The geometric ones (flip, crop, translate, cutout) move or zero pixels and take any
dtype, ``uint8`` included; rotation and colour jitter compute new values and need
floating images (bfloat16 and float16 are computed in float32). Pixel values are taken
in the [0, 1] convention where it matters (brightness); no transform clips.

The hashable configs — ``RandomFlip``, ``RandomCrop``, ``RandomTranslate``,
``RandomRotate``, ``ColorJitter``, ``Cutout`` — check their hyperparameters when built
and are called as ``t(key, image)``. The layer ``Augment(transforms)`` applies them in
order inside a compiled step when ``train=True`` and is the identity when
``train=False``. :func:`mixup` mixes whole batches and their labels, so it belongs in
the loss function, not in a layer.

Augmentations act on the data, before the first parameter, so they are not primitives
and carry no hand-written backward rule: they are linear in the image (contrast is
affine), and JAX differentiates them exactly where a gradient is ever asked for.
"""

from fundl.augment.layer import Augment
from fundl.augment.mixing import mixup
from fundl.augment.transforms import (
    ColorJitter,
    Cutout,
    RandomCrop,
    RandomFlip,
    RandomRotate,
    RandomTranslate,
    batched,
    color_jitter,
    cutout,
    random_crop,
    random_flip,
    random_rotate,
    random_translate,
)

__all__ = [
    "Augment",
    "ColorJitter",
    "Cutout",
    "RandomCrop",
    "RandomFlip",
    "RandomRotate",
    "RandomTranslate",
    "batched",
    "color_jitter",
    "cutout",
    "mixup",
    "random_crop",
    "random_flip",
    "random_rotate",
    "random_translate",
]
