"""VGG (Simonyan & Zisserman 2015): stacks of 3×3 convolutions, each stack ending in a pool."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fundl._validate import check_bool, check_int, check_number
from fundl.nn import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, Sequential

__all__ = ["VGG_CONFIGS", "vgg", "vgg_block"]

# (channels, number of 3×3 convs) per block, the paper's configurations A, B, D and E.
VGG_CONFIGS: dict[str, tuple[tuple[int, int], ...]] = {
    "vgg11": ((64, 1), (128, 1), (256, 2), (512, 2), (512, 2)),
    "vgg13": ((64, 2), (128, 2), (256, 2), (512, 2), (512, 2)),
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}


def vgg_block(
    channels: int, n_convs: int = 2, *, batch_norm: bool = False, activation: Any = "relu"
) -> Sequential:
    """One VGG block: ``n_convs`` × (conv 3×3 SAME → [BatchNorm] → ReLU), then max-pool 2×2.

    The convolutions keep H×W (SAME, stride 1) and the pool halves it, so a block maps
    (N, H, W, C) to (N, ⌊H/2⌋, ⌊W/2⌋, channels). Stacking 3×3 convolutions is the
    paper's point: two see a 5×5 window, three a 7×7, with fewer parameters and more
    non-linearities than one large kernel.

    Args:
      channels: output channels of every conv in the block.
      n_convs: how many convolutions before the pool.
      batch_norm: a ``BatchNorm`` between each conv and its activation (the convs then
        have no bias) — the "VGG-BN" variant; the block then has state.
      activation: a name or a fundl primitive.

    Examples:
      >>> block = fundl.models.vgg_block(8, 2)
      >>> block.output_shape((2, 16, 16, 3))
      (2, 8, 8, 8)
    """
    check_int("vgg_block", "channels", channels)
    check_int("vgg_block", "n_convs", n_convs)
    check_bool("vgg_block", "batch_norm", batch_norm)
    layers: list[Any] = []
    for _ in range(n_convs):
        layers.append(Conv2D(channels, 3, padding="SAME", use_bias=not batch_norm))
        if batch_norm:
            layers.append(BatchNorm())
        layers.append(activation)
    layers.append(MaxPool2D(2))
    return Sequential(layers)


def vgg(
    config: str | Sequence[tuple[int, int]] = "vgg16",
    num_classes: int = 1000,
    *,
    hidden: Sequence[int] = (4096, 4096),
    dropout: float = 0.5,
    batch_norm: bool = False,
    input_shape: tuple[int, int, int] | None = (224, 224, 3),
) -> Sequential:
    """A VGG network: ``vgg_block`` stacks, flatten, then dense layers with dropout.

    ``vgg("vgg16")`` on 224×224×3 images is the paper's configuration D: 138,357,544
    parameters (checked by a test). For small images pass your own blocks and a
    smaller head, e.g. ``vgg(((32, 2), (64, 2)), 10, hidden=(128,), input_shape=(32, 32, 3))``.

    Args:
      config: a name in ``VGG_CONFIGS`` ("vgg11", "vgg13", "vgg16", "vgg19") or the
        blocks as (channels, n_convs) pairs.
      num_classes: output units (logits).
      hidden: widths of the dense layers before the output, each followed by ReLU and
        dropout.
      dropout: rate of those dropouts (0: none).
      batch_norm: ``BatchNorm`` after every conv (VGG-BN).
      input_shape: one image's (H, W, C), or None to give it to ``init``.

    Returns:
      the ``Sequential`` model: NHWC images (batch, H, W, C) -> logits (batch, num_classes).

    Raises:
      ValueError: for an unknown config name, blocks that are not (channels, n_convs), or
        hidden widths that are not positive ints.
      TypeError: for hidden widths that are not a tuple (or list).

    Examples:
      Shapes only (``expected_params`` traces ``init``; nothing is drawn):

      >>> params = fundl.nn.expected_params(fundl.models.vgg("vgg16"), (1, 224, 224, 3))
      >>> sum(leaf.size for leaf in jax.tree.leaves(params))  # configuration D
      138357544
      >>> small = fundl.models.vgg(((4, 1), (8, 1)), 10, hidden=(16,), input_shape=(8, 8, 3))
      >>> small.output_shape((8, 8, 3))
      (10,)
    """
    if isinstance(config, str):
        if config not in VGG_CONFIGS:
            raise ValueError(f"vgg: unknown config {config!r}; known: {sorted(VGG_CONFIGS)}")
        config = VGG_CONFIGS[config]
    try:
        blocks = tuple(tuple(block) for block in config)
    except TypeError:  # None, a number, or blocks that are numbers
        blocks = ()
    if not blocks or any(len(block) != 2 for block in blocks):
        raise ValueError(f"vgg: config must be (channels, n_convs) pairs, got {config!r}")
    check_int("vgg", "num_classes", num_classes)
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(
            f"vgg: hidden must be the widths of the dense layers, a tuple of ints such as "
            f"(4096, 4096) (() for none), got {hidden!r}"
        )
    hidden = tuple(check_int("vgg", "hidden", width) for width in hidden)
    check_number("vgg", "dropout", dropout, low=0.0, high=1.0, high_open=True)
    layers: list[Any] = [vgg_block(c, n, batch_norm=batch_norm) for c, n in blocks]
    layers.append(Flatten())
    for width in hidden:
        layers += [Dense(width), "relu"]
        if dropout > 0:
            layers.append(Dropout(dropout))
    layers.append(Dense(num_classes))
    return Sequential(layers, input_shape=input_shape)
