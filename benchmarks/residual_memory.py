"""Bytes each backward pass keeps alive: fundl's hand-written rules vs JAX autodiff.

The residuals of ``jax.vjp(f, x)`` are the arrays its pullback closes over; this sums
their sizes with fundl's rules (the default) and with ``fundl.reference_mode()`` (JAX
autodiff of the same forward), on CPU, for each activation, each loss, the dense and
conv layers, pooling, batch norm, an MLP, a small CNN and ResNet-20. Bytes are counted, not timed, so the numbers
are exact and repeatable.

Pooling's input is an intermediate in a network (a conv's activation), which autodiff
of max pooling keeps for its backward and fundl's rule does not (it keeps a uint8
position per output): the "relu → max_pool" rows show that; alone, the input is the
caller's and not counted.

Run: python benchmarks/residual_memory.py   (prints a Markdown table)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import fundl
from fundl import activations, losses


def residual_bytes(f, *args) -> int:
    """Total bytes of the arrays ``jax.vjp(f, *args)``'s pullback keeps."""
    _, pullback = jax.vjp(f, *args)
    leaves = jax.tree.leaves(pullback)
    unique = {id(leaf): leaf for leaf in leaves if hasattr(leaf, "nbytes")}
    inputs = {id(leaf) for leaf in jax.tree.leaves(args)}
    # Inputs are alive anyway (the caller holds them); count only what the VJP adds.
    return sum(leaf.nbytes for key, leaf in unique.items() if key not in inputs)


def cases():
    key = jax.random.key(0)
    z = jax.random.normal(key, (256, 512))
    for name in [
        "sigmoid",
        "tanh",
        "relu",
        "leaky_relu",
        "elu",
        "gelu",
        "silu",
        "softplus",
        "softmax",
        "log_softmax",
    ]:
        yield name, activations.get(name), (z,)
    labels = jax.random.randint(key, (256,), 0, 512)
    yield "softmax_cross_entropy", losses.softmax_cross_entropy, (z, labels)
    yield (
        "binary_cross_entropy_with_logits",
        losses.binary_cross_entropy_with_logits,
        (z, jax.nn.sigmoid(z)),
    )
    yield "mse", losses.mse, (z, z * 0.5)
    W = jax.random.normal(key, (256, 512))
    yield "dense", fundl.nn.dense, (z, W, jnp.zeros(256))
    images = jax.random.normal(key, (32, 16, 16, 64))  # NHWC, float32: 2 MiB
    relu, nn = activations.relu, fundl.nn
    yield "max_pool 2×2 (alone)", lambda x: nn.max_pool(x, (2, 2)), (images,)
    yield "relu → max_pool 2×2", lambda x: nn.max_pool(relu(x), (2, 2)), (images,)
    yield (
        "relu → max_pool 3×3, stride 2, SAME",
        lambda x: nn.max_pool(relu(x), (3, 3), stride=2, padding="SAME"),
        (images,),
    )
    yield "relu (for the two rows above)", relu, (images,)
    yield "avg_pool 2×2", lambda x: nn.avg_pool(x, (2, 2)), (images,)
    yield (
        "avg_pool 3×3, stride 2, SAME, count_include_pad=False",
        lambda x: nn.avg_pool(x, (3, 3), stride=2, padding="SAME", count_include_pad=False),
        (images,),
    )
    yield "global_avg_pool", nn.global_avg_pool, (images,)
    images = jax.random.normal(key, (32, 28, 28, 16))  # NHWC
    kernel = jax.random.normal(key, (3, 3, 16, 32))  # HWIO
    yield (
        "conv2d 3x3, 16->32 channels, stride 2, SAME, batch 32 of 28x28",
        lambda x, W, b: fundl.nn.conv2d(x, W, b, stride=2, padding="SAME"),
        (images, kernel, jnp.zeros(32)),
    )
    cnn = fundl.nn.Sequential(
        [fundl.nn.Conv2D(16, 3, padding="SAME"), "relu", fundl.nn.Conv2D(32, 3, stride=2)]
    )
    cnn_params = cnn.init(key, (28, 28, 1))
    digits = jax.random.normal(key, (32, 28, 28, 1))
    yield (
        "cnn conv-relu-conv (16, 32 channels), batch 32 of 28x28",
        lambda p: jnp.sum(cnn.apply(p, digits) ** 2),
        (cnn_params,),
    )
    features = jax.random.normal(key, (32, 16, 16, 64))  # NHWC, float32: 2 MiB
    gamma, beta = jnp.ones(64), jnp.zeros(64)
    yield "batch_norm (training), 32×16×16×64", fundl.nn.batch_norm, (features, gamma, beta)
    unit_W = jax.random.normal(key, (3, 3, 64, 64)) * 0.05
    yield (
        "conv 3×3 → batch_norm → relu (a ResNet unit), 32×16×16×64",
        lambda x, W, g, b: activations.relu(
            fundl.nn.batch_norm(fundl.nn.conv2d(x, W, padding="SAME"), g, b)
        ),
        (features, unit_W, gamma, beta),
    )
    resnet = fundl.models.resnet20()
    resnet_params, resnet_state = resnet.init_with_state(key)
    cifar = jax.random.normal(key, (32, 32, 32, 3))
    cifar_labels = jax.random.randint(key, (32,), 0, 10)

    def resnet_loss(p):
        logits, _ = resnet.apply_with_state(p, resnet_state, cifar, train=True)
        return losses.softmax_cross_entropy(logits, cifar_labels)

    yield "resnet20 training loss, batch 32 of 32×32×3", resnet_loss, (resnet_params,)
    heads = jax.random.normal(key, (3, 4, 8, 512, 64))  # q, k, v: batch 4, 8 heads, L 512
    yield (
        "dot_product_attention, causal, 4×8 heads, L 512, d 64",
        lambda q, k, v: fundl.nn.dot_product_attention(q, k, v, causal=True),
        tuple(heads),
    )
    seq = jax.random.normal(key, (32, 64, 128))  # batch 32, 64 steps, 128 features
    W_ih, W_hh = (
        jax.random.normal(key, (256, 128)) * 0.05,
        jax.random.normal(key, (256, 256)) * 0.05,
    )
    yield (
        "rnn, batch 32, 64 steps, 128 → 256",
        lambda x, W_ih, W_hh: fundl.nn.rnn(
            x, jnp.zeros((32, 256)), W_ih, W_hh, jnp.zeros(256), jnp.zeros(256)
        )[0],
        (seq, W_ih, W_hh),
    )
    model = fundl.mlp([784, 512, 256, 10], "relu")
    params = model.init(key)
    x = jax.random.normal(key, (128, 784))
    y = jax.random.randint(key, (128,), 0, 10)
    yield (
        "mlp 784-512-256-10, batch 128",
        lambda p: losses.softmax_cross_entropy(model.apply(p, x), y),
        (params,),
    )


def main() -> None:
    print("| function | hand-written rules (bytes) | JAX autodiff (bytes) | ratio |")
    print("|---|---:|---:|---:|")
    for name, f, args in cases():
        hand = residual_bytes(f, *args)
        with fundl.reference_mode():
            ref = residual_bytes(f, *args)
        ratio = f"{hand / ref:.2f}" if ref else "—"
        print(f"| {name} | {hand:,} | {ref:,} | {ratio} |")


if __name__ == "__main__":
    main()
