"""ResNet (He, Zhang, Ren & Sun 2016): basic blocks with skip connections, the CIFAR ResNets.

    a^[l+2] = relu(BN(conv(relu(BN(conv(a^[l]))))) + shortcut(a^[l]))

The shortcut is the identity when the block keeps the shape, else a projection (conv
1×1 with the block's stride, then batch norm — the paper's option B). The gradient
reaching a^[l] then has a term that passes the block untouched, which is why a deep
stack of blocks trains where a plain stack of the same depth does not (see
examples/vanishing_gradients.py).
"""

from __future__ import annotations

from typing import Any

from fundl import initializers
from fundl._validate import check_bool, check_int
from fundl.nn import BatchNorm, Conv2D, Dense, GlobalAvgPool, Residual, Sequential

__all__ = ["basic_block", "resnet20", "resnet_cifar"]


def basic_block(channels: int, stride: int = 1, *, projection: bool = False) -> Sequential:
    """A ResNet basic block: two 3×3 convolutions with batch norm, plus the shortcut, then ReLU.

    ``residual1/block``: conv 3×3 (stride ``stride``, padding 1, no bias) → BN → ReLU →
    conv 3×3 (padding 1, no bias) → BN; ``residual1/projection`` (with ``projection``):
    conv 1×1 (stride ``stride``, no bias) → BN; then the sum goes through ReLU. Maps
    (N, H, W, C) to (N, ⌈H/stride⌉, ⌈W/stride⌉, channels). The padding of 1 on every
    side matches PyTorch's ``nn.Conv2d(..., padding=1)``, so converted weights agree.

    Args:
      channels: output channels.
      stride: of the first conv (and the projection): 2 halves H and W.
      projection: a projection shortcut; needed when ``stride`` > 1 or the input has
        other than ``channels`` channels (``init`` says so otherwise).

    Examples:
      >>> block = fundl.models.basic_block(8, 2, projection=True)
      >>> block.output_shape((2, 16, 16, 4))
      (2, 8, 8, 8)
    """
    check_int("basic_block", "channels", channels)
    check_int("basic_block", "stride", stride)
    check_bool("basic_block", "projection", projection)
    if stride > 1 and not projection:
        raise ValueError(
            f"basic_block: stride {stride} changes H and W, so the shortcut needs a "
            "projection: pass projection=True"
        )
    body = Sequential(
        [
            Conv2D(channels, 3, stride=stride, padding=1, use_bias=False),
            BatchNorm(),
            "relu",
            Conv2D(channels, 3, padding=1, use_bias=False),
            BatchNorm(),
        ]
    )
    shortcut = None
    if projection:
        shortcut = Sequential([Conv2D(channels, 1, stride=stride, use_bias=False), BatchNorm()])
    return Sequential([Residual(body, projection=shortcut), "relu"])


def resnet_cifar(
    depth: int = 20,
    num_classes: int = 10,
    *,
    widths: tuple[int, int, int] = (16, 32, 64),
    input_shape: tuple[int, int, int] | None = (32, 32, 3),
) -> Sequential:
    """The CIFAR ResNet-(6n+2) of He et al. 2016, section 4.2.

    conv 3×3 16 → BN → ReLU; three stages of n basic blocks with 16, 32 and 64
    channels (the first block of stages 2 and 3 has stride 2 and a projection
    shortcut); global average pool; dense ``num_classes`` (logits). 6n + 2 weight
    layers: ResNet-20 (n = 3) has 272,474 parameters with these projections (the
    paper's 0.27 M, counted there with zero-padding shortcuts), ResNet-56 855,770.

    Args:
      depth: 6n + 2 (20, 32, 44, 56, 110, ...).
      num_classes: output units.
      widths: channels of the three stages (three positive ints).
      input_shape: one image's (H, W, C), or None to give it to ``init``.

    Returns:
      the ``Sequential`` model: NHWC images (batch, H, W, C) -> logits (batch, num_classes).

    Raises:
      ValueError: for a depth that is not 6n + 2 with n ≥ 1, or widths that are not
        three positive ints.

    Examples:
      Shapes only (``expected_params`` traces ``init``; nothing is drawn):

      >>> model = fundl.models.resnet_cifar(20)  # n = 3
      >>> params = fundl.nn.expected_params(model, (1, 32, 32, 3))  # (batch, H, W, C)
      >>> sum(leaf.size for leaf in jax.tree.leaves(params))
      272474
      >>> model.output_shape((32, 32, 3))
      (10,)
    """

    check_int("resnet_cifar", "depth", depth)
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(
            f"resnet_cifar: depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}"
        )
    n = (depth - 2) // 6
    if not isinstance(widths, (tuple, list)) or len(widths) != 3:
        raise ValueError(
            f"resnet_cifar: widths must be the channels of the three stages, three ints, got "
            f"{widths!r}"
        )
    widths = tuple(check_int("resnet_cifar", "widths", w) for w in widths)
    layers: list[Any] = [Conv2D(widths[0], 3, padding=1, use_bias=False), BatchNorm(), "relu"]
    previous = widths[0]
    for stage, channels in enumerate(widths):
        blocks = []
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            blocks.append(
                basic_block(channels, stride, projection=stride != 1 or previous != channels)
            )
            previous = channels
        layers.append(Sequential(blocks))
    layers += [GlobalAvgPool(), Dense(num_classes, w_init=initializers.xavier_normal)]
    return Sequential(layers, input_shape=input_shape)


def resnet20(num_classes: int = 10, *, input_shape: tuple[int, int, int] | None = (32, 32, 3)):
    """ResNet-20 for 32×32 images: ``resnet_cifar(20, num_classes)``, 272,474 parameters.

    Examples:
      >>> model = fundl.models.resnet20()
      >>> params = fundl.nn.expected_params(model, (1, 32, 32, 3))  # shapes only: cheap
      >>> sum(leaf.size for leaf in jax.tree.leaves(params))
      272474

    """
    return resnet_cifar(20, num_classes, input_shape=input_shape)
