"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998), the notes' "LeNet-like" CNN.

Input → Conv → ReLU → Pool → Conv → ReLU → Pool → FC → FC → FC (logits)
"""

from __future__ import annotations

from typing import Any

from fundl import activations, initializers
from fundl._validate import check_bool, check_choice, check_int, check_number
from fundl.nn import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Sequential,
)
from fundl.nn.combinators import default_w_init

__all__ = ["lenet5"]


def lenet5(
    num_classes: int = 10,
    *,
    activation: Any = "relu",
    pool: str = "max",
    batch_norm: bool = False,
    dropout: float = 0.0,
    c1_padding: str = "SAME",
    input_shape: tuple[int, int, int] | None = (28, 28, 1),
) -> Sequential:
    """LeNet-5 for 28×28 images: 61,706 parameters for one input channel and 10 classes.

    ========  ===============================  ===========  ===========
    layer     what                             output       parameters
    ========  ===============================  ===========  ===========
    C1        conv 5×5, 6 maps, SAME           28×28×6      156
    S2        pool 2×2, stride 2               14×14×6
    C3        conv 5×5, 16 maps, VALID         10×10×16     2,416
    S4        pool 2×2, stride 2               5×5×16
    C5        flatten, dense 120               120          48,120
    F6        dense 84                         84           10,164
    output    dense ``num_classes`` (logits)   10           850
    ========  ===============================  ===========  ===========

    The paper pads MNIST's 28×28 digits to 32×32 and uses VALID convolutions; a SAME
    first convolution on the 28×28 image is the same network. On a 32×32 image (CIFAR)
    that network is ``c1_padding="VALID"``: C1 gives 28×28×6 and the table holds from
    S2 on (62,006 parameters for 3 channels). The default SAME C1 on 32×32 keeps 32×32,
    so C5 sees 6×6×16 = 576 features (83,126 parameters for 3 channels). The paper's
    tanh and trainable subsampling become ``activation`` (ReLU, as the notes draw it;
    "tanh" for the original) and max (or "avg") pooling, and C3 connects every map (the
    paper's sparse connection table was an engineering economy of 1998).

    Args:
      num_classes: output units (logits; pair with ``softmax_cross_entropy``).
      activation: after every conv and hidden dense layer (a name or a fundl primitive).
      pool: "max" or "avg".
      batch_norm: a ``BatchNorm`` after each conv and hidden dense layer, before the
        activation (the convs and dense layers then drop their bias); the model then
        has state.
      dropout: a ``Dropout`` of this rate after each hidden dense layer (0: none).
      c1_padding: "SAME" (28×28 input, the default) or "VALID" (the paper's 32×32 input).
      input_shape: one image's (H, W, C), so ``init(key)`` needs no shape; None to give
        it to ``init``. Other sizes work as long as S4 keeps a pixel: H, W ≥ 12 with a
        SAME C1, ≥ 16 with a VALID one.

    Examples:
      >>> model = fundl.models.lenet5()
      >>> params = model.init(jax.random.key(0))
      >>> sum(leaf.size for leaf in jax.tree.leaves(params))
      61706
      >>> model.apply(params, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
    """
    check_int("lenet5", "num_classes", num_classes)
    check_choice("lenet5", "pool", pool, ("max", "avg"))
    check_bool("lenet5", "batch_norm", batch_norm)
    check_number("lenet5", "dropout", dropout, low=0.0, high=1.0, high_open=True)
    check_choice("lenet5", "c1_padding", c1_padding, ("SAME", "VALID"))
    act = activations.get(activation)
    w_init = default_w_init(act)
    Pool = MaxPool2D if pool == "max" else AvgPool2D
    bias = not batch_norm

    def unit(layer):
        return [layer, BatchNorm(), act] if batch_norm else [layer, act]

    layers = [
        *unit(Conv2D(6, 5, padding=c1_padding, use_bias=bias, w_init=w_init)),
        Pool(2),
        *unit(Conv2D(16, 5, use_bias=bias, w_init=w_init)),
        Pool(2),
        Flatten(),
    ]
    for width in (120, 84):
        layers += unit(Dense(width, use_bias=bias, w_init=w_init))
        if dropout > 0:
            layers.append(Dropout(dropout))
    layers.append(Dense(num_classes, w_init=initializers.xavier_normal))
    return Sequential(layers, input_shape=input_shape)
