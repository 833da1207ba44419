"""Classic architectures as plain layer configs: LeNet-5, VGG, ResNet and Inception blocks.

Every CNN builder returns a fundl layer (a ``Sequential``, ``Residual`` or ``Parallel`` of
the layers in :mod:`fundl.nn`): ``init`` / ``init_state`` make its trees,
``apply_with_state(params, state, x, *, key, train)`` runs it — nothing here that a
reader cannot rebuild from ``fundl.nn`` in a few lines, which is the point. Images are
channels-last (N, H, W, C).

===============================  ===============================================
``lenet5``                       LeCun et al. 1998, the notes' LeNet-like CNN
``vgg_block``, ``vgg``           Simonyan & Zisserman 2015: conv-conv-pool stacks
``basic_block``, ``resnet_cifar``, He et al. 2016: basic blocks with identity or
``resnet20``                     projection shortcuts, the CIFAR ResNet-6n+2
``inception_block``              Szegedy et al. 2015: parallel branches
                                 concatenated on channels
``transformer_lm``,              a decoder-only Transformer LM (GPT-style) with
``TransformerLM``                a key/value cache (``init_cache``, ``decode``)
``generate``, ``sample_token``   cached generation: greedy, temperature, top-k
===============================  ===============================================
"""

from fundl.models.generate import generate, sample_token
from fundl.models.inception import inception_block
from fundl.models.lenet import lenet5
from fundl.models.resnet import basic_block, resnet20, resnet_cifar
from fundl.models.transformer_lm import TransformerLM, transformer_lm
from fundl.models.vgg import VGG_CONFIGS, vgg, vgg_block

__all__ = [
    "VGG_CONFIGS",
    "TransformerLM",
    "basic_block",
    "generate",
    "inception_block",
    "lenet5",
    "resnet20",
    "resnet_cifar",
    "sample_token",
    "transformer_lm",
    "vgg",
    "vgg_block",
]
