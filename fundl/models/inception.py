"""An Inception block (Szegedy et al. 2015, GoogLeNet): parallel branches concatenated on channels."""

from __future__ import annotations

from fundl._validate import check_int
from fundl.nn import Conv2D, MaxPool2D, Parallel, Sequential

__all__ = ["inception_block"]


def inception_block(
    c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool_proj: int
) -> Parallel:
    """Four branches on the same input, their outputs concatenated along channels.

    ====== ==============================================  =============
    branch layers (ReLU after every conv, SAME padding)   channels out
    ====== ==============================================  =============
    1      conv 1×1                                        ``c1``
    2      conv 1×1 (``c3_reduce``) → conv 3×3             ``c3``
    3      conv 1×1 (``c5_reduce``) → conv 5×5             ``c5``
    4      max-pool 3×3, stride 1, SAME → conv 1×1         ``pool_proj``
    ====== ==============================================  =============

    (N, H, W, C) → (N, H, W, c1 + c3 + c5 + pool_proj). The 1×1 "reduce" convs cut the
    channels before the expensive 3×3 and 5×5 ones. GoogLeNet's block 3a is
    ``inception_block(64, 96, 128, 16, 32, 32)`` on 28×28×192: 256 channels out,
    163,696 parameters.

    Examples:
      >>> block = fundl.models.inception_block(4, 3, 4, 2, 2, 2)
      >>> block.output_shape((2, 8, 8, 5))
      (2, 8, 8, 12)
    """
    for name, value in zip(
        ("c1", "c3_reduce", "c3", "c5_reduce", "c5", "pool_proj"),
        (c1, c3_reduce, c3, c5_reduce, c5, pool_proj),
    ):
        check_int("inception_block", name, value)

    def conv(channels: int, size: int) -> list:
        return [Conv2D(channels, size, padding="SAME"), "relu"]

    return Parallel(
        [
            Sequential(conv(c1, 1)),
            Sequential(conv(c3_reduce, 1) + conv(c3, 3)),
            Sequential(conv(c5_reduce, 1) + conv(c5, 5)),
            Sequential([MaxPool2D(3, stride=1, padding="SAME"), *conv(pool_proj, 1)]),
        ]
    )
