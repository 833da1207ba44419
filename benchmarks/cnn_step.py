"""Steps/s of a compiled CNN train step: fundl vs raw JAX, Flax, Equinox and PyTorch.

Two models, the same in every implementation:

- LeNet-style CNN, batch 64 of 28×28×1 images, 10 classes (61,706 parameters)::

    conv 5×5, 6 channels, SAME → ReLU → max-pool 2×2
    → conv 5×5, 16 channels, VALID → ReLU → max-pool 2×2
    → flatten (5·5·16 = 400) → dense 120 → ReLU → dense 84 → ReLU → dense 10 (logits)

- ResNet-20 (He et al. 2016, the CIFAR network), batch 128 of 32×32×3 images, 10
  classes (272,474 parameters)::

    conv 3×3, 16, no bias → BN → ReLU
    → three stages of three basic blocks, 16, 32 and 64 channels; the first block of
      stages 2 and 3 has stride 2
    → global average pool → dense 10 (logits)

    basic block: conv 3×3 (stride) → BN → ReLU → conv 3×3 → BN, plus the shortcut —
    the identity, or where the shape changes a projection: conv 1×1 (stride), no bias,
    → BN — then ReLU. Every 3×3 conv pads 1 on each side (PyTorch's ``padding=1``; JAX's
    "SAME" would pad (0, 1) at stride 2), convs have no bias.

  BN in training mode: batch statistics over (N, H, W), eps 1e-5, running averages
  updated with momentum 0.9 as the weight of the old value (PyTorch's momentum=0.1).

Both: softmax cross-entropy on integer labels, Adam (lr 1e-3, b1 0.9, b2 0.999, eps
1e-8). Initial weights, shared by every implementation but fundl: He normal (std
√(2/fan_in)) for the convs and hidden dense layers, Xavier normal for the logits,
biases 0, BN scale 1 and offset 0. Data: one random batch, already on the device.

Implementations, channels-last (NHWC) where the library allows:

- raw JAX: ``lax.conv_general_dilated`` (NHWC, HWIO kernels), ``lax.reduce_window``
  max-pool, batch norm and the running-average update written in ``jax.numpy``, JAX
  autodiff, the hand-written Adam of train_step.py, ``jax.jit`` donating the carried
  (params, opt state, BN state): the floor a library on JAX can reach.
- fundl: ``fundl.models.lenet5()`` (no state: ``make_train_step`` with ``(params,
  opt_state)``) and ``fundl.models.resnet20()`` (batch norm: ``stateful=True`` and a
  ``TrainState``), ``fundl.optim.adam``, fundl's own initial weights. Skipped with a
  note while ``fundl.models`` cannot be imported.
- Flax Linen (``nn.Conv``, ``nn.max_pool``, ``nn.BatchNorm``, ``jax.jit`` donating),
  Flax NNX (``nnx.Conv``, ``nnx.BatchNorm``, ``nnx.Optimizer``, ``nnx.jit``), Equinox
  (``eqx.nn.Conv2d``, ``eqx.nn.BatchNorm(mode="batch")`` with ``eqx.nn.State``,
  ``eqx.filter_jit``; channels-first per example, vmapped, as Equinox's layers take
  one example), all with ``optax.adam``; PyTorch eager on the CPU (NCHW, its native
  layout, and the ``channels_last`` memory format; ``torch.optim.Adam``, one thread
  per core). Each row is "not installed" when its package is missing.
- scan-fused: k steps per call in one ``lax.scan`` over k batches (the first of them
  the batch above): ``fundl.train.make_scan_steps`` vs the raw step under ``lax.scan``.
  On XLA's CPU backend this is slower, not faster, for a CNN: inside a loop body the
  convolutions of the backward pass keep their non-canonical dimension numbers (e.g.
  ``f01b_i01o->01bf`` for a kernel gradient) and miss the fast convolution path
  (jax-ml/jax#12868): 4× slower per step for LeNet, ~30× for ResNet-20 on 2 cores, where
  a fully unrolled scan is not. ``--no-scan`` leaves these rows out.

Checks, before the timing: each implementation's parameter count (counted from its own
init) must equal raw JAX's; its loss at step 1 must equal raw JAX's (same weights, same
batch: they compute the same function; fundl, with its own weights, is exempt); and
after a few steps on the same batch the loss must have fallen. A failed check is
printed and the script exits with status 1 after its report.

Timing: train_step.py's method (``measure``): compiled and warm first, blocks of about
0.15 s (at least one call), the candidates interleaved round after round in a rotating
order, medians, ratios to raw JAX paired by round.

Run:   python benchmarks/cnn_step.py --rounds 10 --out benchmarks/results_cnn.md
Smoke: python benchmarks/cnn_step.py --quick --model lenet   # ~1 min on 2 busy cores
       python benchmarks/cnn_step.py --quick --model resnet20 --no-scan
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from train_step import (
    LEARNING_RATE,
    measure,
    optax_loss,
    raw_adam_init,
    raw_adam_update,
    table,
    versions,
)

import fundl

BN_MOMENTUM = 0.9  # the weight of the old running statistics
BN_EPS = 1e-5
CHECK_STEPS = 5  # steps on one batch before the loss must have fallen
LOSS_TOLERANCE = 1e-3  # |step-1 loss − raw JAX's|: float32 convolutions in other orders
PEER_MODULES = ("flax", "equinox", "optax", "torch")


class Spec(NamedTuple):
    key: str  # the --model name
    label: str
    image: tuple[int, int, int]  # (H, W, C) of one example
    batch: int
    classes: int
    scan_steps: int  # k of the scan-fused rows


SPECS = {
    "lenet": Spec("lenet", "LeNet-style CNN, batch 64 of 28×28×1", (28, 28, 1), 64, 10, 20),
    # k = 2: on XLA's CPU backend a conv's gradient inside a loop body runs ~30× slower
    # (jax-ml/jax#12868), so one ResNet-20 scan call takes a minute on 2 cores.
    "resnet20": Spec("resnet20", "ResNet-20, batch 128 of 32×32×3", (32, 32, 3), 128, 10, 2),
}

LENET_FLAT = (5, 5, 16)  # (H, W, C) of the feature map LeNet flattens into its dense1

# ResNet-20's nine basic blocks: (channels, stride of the first conv, projection shortcut)
RESNET_BLOCKS = (
    *[(16, 1, False)] * 3,
    (32, 2, True),
    *[(32, 1, False)] * 2,
    (64, 2, True),
    *[(64, 1, False)] * 2,
)


class Impl(NamedTuple):
    """A row: train_step.py's ``Candidate`` fields (``measure`` and ``table`` read them),
    plus what the checks read."""

    name: str
    role: Literal["raw", "fundl", "peer", "raw scan", "fundl scan"]
    run: Callable[[int], None] | None  # run(calls): that many calls, synced once at the end
    steps_per_call: int = 1
    note: str = ""  # why there is no run
    losses: Callable[[], np.ndarray] | None = None  # the latest call's loss per step
    n_params: int = 0  # counted from the implementation's own init
    own_init: bool = False  # fundl: its own initial weights, not the shared ones


def skipped(name: str, role: Any, note: str) -> Impl:
    return Impl(name, role, None, note=note)


# --- the problem every implementation shares -----------------------------------------


class Problem(NamedTuple):
    params: dict[str, Any]  # raw layout (below), NumPy arrays
    state: dict[str, Any]  # BN running statistics ({} for LeNet)
    x: np.ndarray  # (batch, H, W, C) float32
    y: np.ndarray  # (batch,) int32
    xs: np.ndarray  # (k, batch, H, W, C), xs[0] = x
    ys: np.ndarray  # (k, batch), ys[0] = y


def he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * math.sqrt(2 / fan_in)).astype(np.float32)


def conv_init(rng, k: int, c_in: int, c_out: int, *, bias: bool) -> dict[str, np.ndarray]:
    """{"W": (k, k, c_in, c_out) HWIO, "b": (c_out,)}: He normal, bias 0."""
    p = {"W": he(rng, (k, k, c_in, c_out), k * k * c_in)}
    return p | {"b": np.zeros(c_out, np.float32)} if bias else p


def dense_init(rng, n_in: int, n_out: int, *, logits: bool = False) -> dict[str, np.ndarray]:
    """{"W": (n_in, n_out), "b": (n_out,)}: He normal, or Xavier normal for the logits."""
    fan = (n_in + n_out) / 2 if logits else n_in  # Xavier: std √(2 / (n_in + n_out))
    return {"W": he(rng, (n_in, n_out), fan), "b": np.zeros(n_out, np.float32)}


def bn_init(c: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({"gamma", "beta"}, {"mean", "var"}), each (c,): every library's defaults."""
    ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
    return {"gamma": ones, "beta": zeros}, {"mean": zeros.copy(), "var": ones.copy()}


def lenet_init(rng: np.random.Generator, spec: Spec) -> tuple[dict, dict]:
    h, w, c = LENET_FLAT
    params = {
        "conv1": conv_init(rng, 5, spec.image[2], 6, bias=True),
        "conv2": conv_init(rng, 5, 6, 16, bias=True),
        "dense1": dense_init(rng, h * w * c, 120),
        "dense2": dense_init(rng, 120, 84),
        "dense3": dense_init(rng, 84, spec.classes, logits=True),
    }
    return params, {}


def resnet_init(rng: np.random.Generator, spec: Spec) -> tuple[dict, dict]:
    """params {"stem_conv", "stem_bn", "block1".."block9", "dense"}; state alike for the BNs.

    A block holds conv1, bn1, conv2, bn2 and, with a projection, proj and proj_bn.
    """
    params, state = {"stem_conv": conv_init(rng, 3, spec.image[2], 16, bias=False)}, {}
    params["stem_bn"], state["stem_bn"] = bn_init(16)
    c_in = 16
    for i, (c, _, projection) in enumerate(RESNET_BLOCKS, start=1):
        p, s = {"conv1": conv_init(rng, 3, c_in, c, bias=False)}, {}
        p["bn1"], s["bn1"] = bn_init(c)
        p["conv2"] = conv_init(rng, 3, c, c, bias=False)
        p["bn2"], s["bn2"] = bn_init(c)
        if projection:
            p["proj"] = conv_init(rng, 1, c_in, c, bias=False)
            p["proj_bn"], s["proj_bn"] = bn_init(c)
        params[f"block{i}"], state[f"block{i}"] = p, s
        c_in = c
    params["dense"] = dense_init(rng, c_in, spec.classes, logits=True)
    return params, state


def make_problem(spec: Spec, *, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    params, state = (lenet_init if spec.key == "lenet" else resnet_init)(rng, spec)
    xs = rng.standard_normal((spec.scan_steps, spec.batch, *spec.image), dtype=np.float32)
    ys = rng.integers(0, spec.classes, (spec.scan_steps, spec.batch)).astype(np.int32)
    return Problem(params, state, xs[0], ys[0], xs, ys)


def on_device(tree: Any) -> Any:
    """Fresh device buffers (each implementation donates its own)."""
    return jax.tree.map(jnp.array, tree)


def count(tree: Any) -> int:
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


def weight_layers(params: dict[str, Any], prefix: tuple[str, ...] = ()):
    """(path, {"W", "b"?}) of every conv and dense layer of a raw param tree, in order."""
    for name, value in params.items():
        if "W" in value:
            yield (*prefix, name), value
        elif "gamma" not in value:
            yield from weight_layers(value, (*prefix, name))


def chw_rows(W: np.ndarray) -> np.ndarray:
    """LeNet's dense1 (400, 120), rows in NHWC flatten order → NCHW order (torch, Equinox)."""
    h, w, c = LENET_FLAT
    return W.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)


def carry_loop(step: Callable[..., Any], carry: Any, *batch: Any) -> tuple[Callable, Callable]:
    """run(calls) for ``step(carry, *batch) -> (carry, loss)``, and the latest loss(es)."""
    cell = {"carry": carry, "loss": None}

    def run(calls: int) -> None:
        carry = cell["carry"]
        for _ in range(calls):
            carry, loss = step(carry, *batch)
        jax.block_until_ready((carry, loss))
        cell["carry"], cell["loss"] = carry, loss

    return run, lambda: np.atleast_1d(np.asarray(cell["loss"], np.float64))


# --- raw JAX -------------------------------------------------------------------------


def raw_conv(x, p, stride=1, padding: Any = "SAME"):
    y = lax.conv_general_dilated(
        x, p["W"], (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + p["b"] if "b" in p else y


def raw_max_pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def raw_batch_norm(x, p, s):
    """Batch statistics over (N, H, W); the running averages updated (unbiased variance).

    The mean once, then the variance of the centred values, the scale folded per
    channel: ``jnp.mean`` plus ``jnp.var`` (which takes the mean again) costs ResNet-20
    42 more reductions and ~11 % of its step on the CPU.
    """
    mean = jnp.mean(x, axis=(0, 1, 2))
    centred = x - mean
    var = jnp.mean(centred * centred, axis=(0, 1, 2))
    y = centred * (lax.rsqrt(var + BN_EPS) * p["gamma"]) + p["beta"]
    n = x.size // x.shape[-1]
    mean, var = lax.stop_gradient(mean), lax.stop_gradient(var) * (n / (n - 1))
    m = BN_MOMENTUM
    return y, {"mean": m * s["mean"] + (1 - m) * mean, "var": m * s["var"] + (1 - m) * var}


def raw_lenet(params, state, x):
    """(logits, state): LeNet has no state; the empty dict passes through."""
    x = raw_max_pool(jax.nn.relu(raw_conv(x, params["conv1"], padding="SAME")))
    x = raw_max_pool(jax.nn.relu(raw_conv(x, params["conv2"], padding="VALID")))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["dense1"]["W"] + params["dense1"]["b"])
    x = jax.nn.relu(x @ params["dense2"]["W"] + params["dense2"]["b"])
    return x @ params["dense3"]["W"] + params["dense3"]["b"], state


PAD1 = ((1, 1), (1, 1))  # PyTorch's padding=1


def raw_resnet(params, state, x):
    """(logits, new BN state)."""
    new = {}
    x, new["stem_bn"] = raw_batch_norm(
        raw_conv(x, params["stem_conv"], padding=PAD1), params["stem_bn"], state["stem_bn"]
    )
    x = jax.nn.relu(x)
    for i, (_, stride, projection) in enumerate(RESNET_BLOCKS, start=1):
        p, s, ns = params[f"block{i}"], state[f"block{i}"], {}
        h, ns["bn1"] = raw_batch_norm(raw_conv(x, p["conv1"], stride, PAD1), p["bn1"], s["bn1"])
        h, ns["bn2"] = raw_batch_norm(
            raw_conv(jax.nn.relu(h), p["conv2"], 1, PAD1), p["bn2"], s["bn2"]
        )
        if projection:
            x, ns["proj_bn"] = raw_batch_norm(
                raw_conv(x, p["proj"], stride, "VALID"), p["proj_bn"], s["proj_bn"]
            )
        x, new[f"block{i}"] = jax.nn.relu(h + x), ns
    x = jnp.mean(x, axis=(1, 2))
    return x @ params["dense"]["W"] + params["dense"]["b"], new


def cross_entropy(logits, y):
    log_p = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))


def raw_step_fn(forward: Callable[..., Any]) -> Callable[..., Any]:
    """((params, opt_state, state), x, y) -> (carry, loss): autodiff, then the raw Adam."""

    def step(carry, x, y):
        params, opt_state, state = carry

        def loss(params):
            logits, new_state = forward(params, state, x)
            return cross_entropy(logits, y), new_state

        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        params, opt_state = raw_adam_update(params, opt_state, grads)
        return (params, opt_state, state), value

    return step


def raw_forward(spec: Spec) -> Callable[..., Any]:
    return raw_lenet if spec.key == "lenet" else raw_resnet


def raw_start(problem: Problem):
    params = on_device(problem.params)
    return (params, raw_adam_init(params), on_device(problem.state))


def build_raw(problem: Problem, spec: Spec) -> Impl:
    step = jax.jit(raw_step_fn(raw_forward(spec)), donate_argnums=0)
    run, losses = carry_loop(
        step, raw_start(problem), jnp.asarray(problem.x), jnp.asarray(problem.y)
    )
    return Impl("raw JAX", "raw", run, losses=losses, n_params=count(problem.params))


def build_raw_scan(problem: Problem, spec: Spec) -> Impl:
    one = raw_step_fn(raw_forward(spec))

    def steps(carry, xs, ys):
        return lax.scan(lambda carry, batch: one(carry, *batch), carry, (xs, ys))

    step = jax.jit(steps, donate_argnums=0)
    run, losses = carry_loop(
        step, raw_start(problem), jnp.asarray(problem.xs), jnp.asarray(problem.ys)
    )
    name = f"raw JAX, scan-fused (k={spec.scan_steps})"
    return Impl(
        name, "raw scan", run, spec.scan_steps, losses=losses, n_params=count(problem.params)
    )


# --- fundl ---------------------------------------------------------------------------


def fundl_models() -> Any:
    """``fundl.models``, or the ImportError that says why not (it is being written)."""
    try:
        from fundl import models
    except ImportError as error:
        return error
    return models


def fundl_model(spec: Spec) -> Any:
    models = fundl_models()
    if spec.key == "lenet":
        return models.lenet5(num_classes=spec.classes)
    return models.resnet20(num_classes=spec.classes)


def fundl_stateful_loss(model: Any) -> Callable[..., Any]:
    def loss_fn(params, batch, *, state, key, train):
        x, y = batch
        logits, state = model.apply_with_state(params, state, x, key=key, train=train)
        return fundl.losses.softmax_cross_entropy(logits, y), {}, state

    return loss_fn


def fundl_plain_loss(model: Any) -> Callable[..., Any]:
    def loss_fn(params, batch):
        x, y = batch
        return fundl.losses.softmax_cross_entropy(model.apply(params, x), y)

    return loss_fn


def build_fundl_row(problem: Problem, spec: Spec, *, scan: bool) -> Impl:
    """LeNet: the plain (params, opt_state) step; ResNet-20 (batch norm): stateful=True."""
    k = spec.scan_steps if scan else 1
    name, role = ("fundl", "fundl") if not scan else (f"fundl, scan-fused (k={k})", "fundl scan")
    if isinstance(fundl_models(), ImportError):
        return skipped(name, role, "skipped: no fundl.models (see the note above)")
    model = fundl_model(spec)
    params, model_state = model.init_with_state(jax.random.key(0), spec.image)
    optimizer = fundl.optim.adam(LEARNING_RATE)
    x, y = (problem.xs, problem.ys) if scan else (problem.x, problem.y)
    batch = (jnp.asarray(x), jnp.asarray(y))
    builder = fundl.train.make_scan_steps if scan else fundl.train.make_train_step
    if jax.tree.leaves(model_state):
        compiled = builder(fundl_stateful_loss(model), optimizer, stateful=True)
        carry = fundl.train.TrainState.create(params, optimizer, model_state=model_state, key=1)

        def step(train_state, batch):
            train_state, metrics = compiled(train_state, batch)
            return train_state, metrics["loss"]

    else:
        compiled = builder(fundl_plain_loss(model), optimizer)
        carry = (params, optimizer.init(params))

        def step(carry, batch):
            params, opt_state, metrics = compiled(*carry, batch)
            return (params, opt_state), metrics["loss"]

    run, losses = carry_loop(step, carry, batch)
    return Impl(name, role, run, k, losses=losses, n_params=count(params), own_init=True)


# --- Flax Linen ----------------------------------------------------------------------

FLAX_NAMES = {"W": "kernel", "b": "bias", "gamma": "scale", "beta": "bias"}


def to_flax(tree: dict[str, Any]) -> dict[str, Any]:
    """The raw tree with Flax's leaf names (kernels are HWIO and (n_in, n_out) in both)."""
    return {
        FLAX_NAMES.get(k, k): to_flax(v) if isinstance(v, dict) else jnp.array(v)
        for k, v in tree.items()
    }


def linen_modules():
    import flax.linen as nn

    class LeNet(nn.Module):
        classes: int

        @nn.compact
        def __call__(self, x, train: bool = True):
            del train
            pool = functools.partial(nn.max_pool, window_shape=(2, 2), strides=(2, 2))
            x = pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME", name="conv1")(x)))
            x = pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID", name="conv2")(x)))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(120, name="dense1")(x))
            x = nn.relu(nn.Dense(84, name="dense2")(x))
            return nn.Dense(self.classes, name="dense3")(x)

    def bn(train: bool, name: str):
        return nn.BatchNorm(
            use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name
        )

    def conv3(channels: int, stride: int, name: str):
        return nn.Conv(channels, (3, 3), stride, padding=PAD1, use_bias=False, name=name)

    class Block(nn.Module):
        channels: int
        stride: int
        projection: bool

        @nn.compact
        def __call__(self, x, train: bool):
            h = nn.relu(bn(train, "bn1")(conv3(self.channels, self.stride, "conv1")(x)))
            h = bn(train, "bn2")(conv3(self.channels, 1, "conv2")(h))
            if self.projection:
                proj = nn.Conv(
                    self.channels, (1, 1), self.stride, padding="VALID", use_bias=False, name="proj"
                )
                x = bn(train, "proj_bn")(proj(x))
            return nn.relu(h + x)

    class ResNet20(nn.Module):
        classes: int

        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.relu(bn(train, "stem_bn")(conv3(16, 1, "stem_conv")(x)))
            for i, block in enumerate(RESNET_BLOCKS, start=1):
                x = Block(*block, name=f"block{i}")(x, train)
            return nn.Dense(self.classes, name="dense")(jnp.mean(x, axis=(1, 2)))

    return LeNet, ResNet20


def check_same_tree(name: str, own: Any, shared: Any) -> None:
    """The shared weights must fill the implementation's own tree exactly."""
    shapes = lambda tree: jax.tree.map(np.shape, tree)
    if shapes(own) != shapes(shared):
        raise ValueError(f"{name}: its own params {shapes(own)} != the shared {shapes(shared)}")


def build_flax_linen(problem: Problem, spec: Spec) -> Impl:
    import optax

    LeNet, ResNet20 = linen_modules()
    model = (LeNet if spec.key == "lenet" else ResNet20)(spec.classes)
    own = model.init(jax.random.key(0), jnp.zeros((1, *spec.image)), train=False)
    params, stats = to_flax(problem.params), to_flax(problem.state)
    check_same_tree("Flax Linen", own["params"], params)
    tx = optax.adam(LEARNING_RATE)

    def train_step(carry, x, y):
        params, opt_state, stats = carry

        def loss(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return optax_loss(logits, y), updates.get("batch_stats", {})

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, stats), value

    step = jax.jit(train_step, donate_argnums=0)
    carry = (params, tx.init(params), stats)
    run, losses = carry_loop(step, carry, jnp.asarray(problem.x), jnp.asarray(problem.y))
    return Impl("Flax Linen", "peer", run, losses=losses, n_params=count(own["params"]))


# --- Flax NNX ------------------------------------------------------------------------


def nnx_modules():
    from flax import nnx

    def pool(x):
        return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))

    class LeNet(nnx.Module):
        def __init__(self, spec: Spec, rngs: nnx.Rngs):
            h, w, c = LENET_FLAT
            self.conv1 = nnx.Conv(spec.image[2], 6, (5, 5), padding="SAME", rngs=rngs)
            self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
            self.dense1 = nnx.Linear(h * w * c, 120, rngs=rngs)
            self.dense2 = nnx.Linear(120, 84, rngs=rngs)
            self.dense3 = nnx.Linear(84, spec.classes, rngs=rngs)

        def __call__(self, x):
            x = pool(nnx.relu(self.conv1(x)))
            x = pool(nnx.relu(self.conv2(x)))
            x = x.reshape(x.shape[0], -1)
            x = nnx.relu(self.dense1(x))
            return self.dense3(nnx.relu(self.dense2(x)))

    def bn(c: int, rngs):
        return nnx.BatchNorm(c, momentum=BN_MOMENTUM, epsilon=BN_EPS, rngs=rngs)

    def conv3(c_in: int, c_out: int, stride: int, rngs):
        return nnx.Conv(c_in, c_out, (3, 3), stride, padding=PAD1, use_bias=False, rngs=rngs)

    class Block(nnx.Module):
        def __init__(self, c_in: int, c: int, stride: int, projection: bool, rngs: nnx.Rngs):
            self.conv1, self.bn1 = conv3(c_in, c, stride, rngs), bn(c, rngs)
            self.conv2, self.bn2 = conv3(c, c, 1, rngs), bn(c, rngs)
            if projection:  # NNX: a None assigned first would make the attribute static
                self.proj = nnx.Conv(
                    c_in, c, (1, 1), stride, padding="VALID", use_bias=False, rngs=rngs
                )
                self.proj_bn = bn(c, rngs)
            else:
                self.proj = self.proj_bn = None

        def __call__(self, x):
            h = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
            if self.proj is not None:
                x = self.proj_bn(self.proj(x))
            return nnx.relu(h + x)

    class ResNet20(nnx.Module):
        def __init__(self, spec: Spec, rngs: nnx.Rngs):
            self.stem_conv, self.stem_bn = conv3(spec.image[2], 16, 1, rngs), bn(16, rngs)
            blocks, c_in = [], 16
            for c, stride, projection in RESNET_BLOCKS:
                blocks.append(Block(c_in, c, stride, projection, rngs))
                c_in = c
            self.blocks = nnx.List(blocks)
            self.dense = nnx.Linear(c_in, spec.classes, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.stem_bn(self.stem_conv(x)))
            for block in self.blocks:
                x = block(x)
            return self.dense(jnp.mean(x, axis=(1, 2)))

    return LeNet, ResNet20


def submodule(model: Any, path: tuple[str, ...]) -> Any:
    """The layer at a raw path: "blockN" is the model's ``blocks[N - 1]``."""
    for name in path:
        if name.startswith("block"):
            model = model.blocks[int(name.removeprefix("block")) - 1]
        else:
            model = getattr(model, name)
    return model


def build_flax_nnx(problem: Problem, spec: Spec) -> Impl:
    import optax
    from flax import nnx

    LeNet, ResNet20 = nnx_modules()
    model = (LeNet if spec.key == "lenet" else ResNet20)(spec, nnx.Rngs(0))
    n_params = count(nnx.state(model, nnx.Param))
    for path, p in weight_layers(problem.params):  # kernels HWIO and (n_in, n_out), as raw
        layer = submodule(model, path)
        layer.kernel[...] = jnp.asarray(p["W"])
        if "b" in p:
            layer.bias[...] = jnp.asarray(p["b"])
    model.train()
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: optax_loss(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    def step_carry(carry, x, y):  # NNX updates the model and optimizer in place
        model, optimizer = carry
        return carry, step(model, optimizer, x, y)

    carry = (model, optimizer)
    run, losses = carry_loop(step_carry, carry, jnp.asarray(problem.x), jnp.asarray(problem.y))
    return Impl("Flax NNX", "peer", run, losses=losses, n_params=n_params)


# --- Equinox -------------------------------------------------------------------------


def eqx_modules():
    import equinox as eqx

    class LeNet(eqx.Module):
        conv1: eqx.nn.Conv2d
        conv2: eqx.nn.Conv2d
        dense1: eqx.nn.Linear
        dense2: eqx.nn.Linear
        dense3: eqx.nn.Linear
        pool: eqx.nn.MaxPool2d

        def __init__(self, spec: Spec, key):
            keys = jax.random.split(key, 5)
            h, w, c = LENET_FLAT
            self.conv1 = eqx.nn.Conv2d(spec.image[2], 6, 5, padding="SAME", key=keys[0])
            self.conv2 = eqx.nn.Conv2d(6, 16, 5, padding="VALID", key=keys[1])
            self.dense1 = eqx.nn.Linear(h * w * c, 120, key=keys[2])
            self.dense2 = eqx.nn.Linear(120, 84, key=keys[3])
            self.dense3 = eqx.nn.Linear(84, spec.classes, key=keys[4])
            self.pool = eqx.nn.MaxPool2d(2, 2)

        def __call__(self, x, state):  # one example: (C, H, W) -> (classes,)
            x = self.pool(jax.nn.relu(self.conv1(x)))
            x = self.pool(jax.nn.relu(self.conv2(x)))
            x = jax.nn.relu(self.dense1(x.reshape(-1)))
            return self.dense3(jax.nn.relu(self.dense2(x))), state

    def bn(c: int):
        return eqx.nn.BatchNorm(
            c, axis_name="batch", eps=BN_EPS, momentum=BN_MOMENTUM, mode="batch"
        )

    def conv3(c_in: int, c_out: int, stride: int, key):
        return eqx.nn.Conv2d(c_in, c_out, 3, stride, padding=1, use_bias=False, key=key)

    class Block(eqx.Module):
        conv1: eqx.nn.Conv2d
        bn1: eqx.nn.BatchNorm
        conv2: eqx.nn.Conv2d
        bn2: eqx.nn.BatchNorm
        proj: eqx.nn.Conv2d | None
        proj_bn: eqx.nn.BatchNorm | None

        def __init__(self, c_in: int, c: int, stride: int, projection: bool, key):
            keys = jax.random.split(key, 3)
            self.conv1, self.bn1 = conv3(c_in, c, stride, keys[0]), bn(c)
            self.conv2, self.bn2 = conv3(c, c, 1, keys[1]), bn(c)
            if projection:
                self.proj = eqx.nn.Conv2d(c_in, c, 1, stride, use_bias=False, key=keys[2])
                self.proj_bn = bn(c)
            else:
                self.proj = self.proj_bn = None

        def __call__(self, x, state):
            h, state = self.bn1(self.conv1(x), state)
            h, state = self.bn2(self.conv2(jax.nn.relu(h)), state)
            if self.proj is not None:
                x, state = self.proj_bn(self.proj(x), state)
            return jax.nn.relu(h + x), state

    class ResNet20(eqx.Module):
        stem_conv: eqx.nn.Conv2d
        stem_bn: eqx.nn.BatchNorm
        blocks: tuple
        dense: eqx.nn.Linear

        def __init__(self, spec: Spec, key):
            keys = jax.random.split(key, len(RESNET_BLOCKS) + 2)
            self.stem_conv, self.stem_bn = conv3(spec.image[2], 16, 1, keys[0]), bn(16)
            blocks, c_in = [], 16
            for (c, stride, projection), k in zip(RESNET_BLOCKS, keys[1:-1]):
                blocks.append(Block(c_in, c, stride, projection, k))
                c_in = c
            self.blocks = tuple(blocks)
            self.dense = eqx.nn.Linear(c_in, spec.classes, key=keys[-1])

        def __call__(self, x, state):
            x, state = self.stem_bn(self.stem_conv(x), state)
            x = jax.nn.relu(x)
            for block in self.blocks:
                x, state = block(x, state)
            return self.dense(jnp.mean(x, axis=(1, 2))), state

    return LeNet, ResNet20


def build_equinox(problem: Problem, spec: Spec) -> Impl:
    import equinox as eqx
    import optax

    LeNet, ResNet20 = eqx_modules()
    model, state = eqx.nn.make_with_state(LeNet if spec.key == "lenet" else ResNet20)(
        spec, jax.random.key(0)
    )
    n_params = count(eqx.filter(model, eqx.is_inexact_array))
    for path, p in weight_layers(problem.params):
        W = p["W"]
        if W.ndim == 4:  # HWIO -> OIHW
            W = W.transpose(3, 2, 0, 1)
        else:  # (n_in, n_out) -> (n_out, n_in)
            W = (chw_rows(W) if path == ("dense1",) else W).T
        leaves = lambda m, path=path: submodule(m, path).weight
        model = eqx.tree_at(leaves, model, jnp.asarray(W))
        if "b" in p:
            bias = lambda m, path=path: submodule(m, path).bias
            b = p["b"].reshape(-1, 1, 1) if W.ndim == 4 else p["b"]  # conv bias (O, 1, 1)
            model = eqx.tree_at(bias, model, jnp.asarray(b))
    tx = optax.adam(LEARNING_RATE)

    @eqx.filter_jit
    def step(carry, x, y):
        model, state, opt_state = carry

        def loss(model):
            batched = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
            logits, new_state = batched(x, state)
            return optax_loss(logits, y), new_state

        (value, state), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return (eqx.apply_updates(model, updates), state, opt_state), value

    carry = (model, state, tx.init(eqx.filter(model, eqx.is_array)))
    x = jnp.asarray(problem.x.transpose(0, 3, 1, 2))  # Equinox's convs are channels-first
    run, losses = carry_loop(step, carry, x, jnp.asarray(problem.y))
    return Impl("Equinox", "peer", run, losses=losses, n_params=n_params)


# --- PyTorch eager -------------------------------------------------------------------


def torch_modules():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LeNet(nn.Module):
        def __init__(self, spec: Spec):
            super().__init__()
            h, w, c = LENET_FLAT
            self.conv1 = nn.Conv2d(spec.image[2], 6, 5, padding=2)  # SAME for 5×5
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.dense1 = nn.Linear(h * w * c, 120)
            self.dense2 = nn.Linear(120, 84)
            self.dense3 = nn.Linear(84, spec.classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.dense1(torch.flatten(x, 1)))
            return self.dense3(F.relu(self.dense2(x)))

    def bn(c: int):
        return nn.BatchNorm2d(c, eps=BN_EPS, momentum=1 - BN_MOMENTUM)

    def conv3(c_in: int, c_out: int, stride: int):
        return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)

    class Block(nn.Module):
        def __init__(self, c_in: int, c: int, stride: int, projection: bool):
            super().__init__()
            self.conv1, self.bn1 = conv3(c_in, c, stride), bn(c)
            self.conv2, self.bn2 = conv3(c, c, 1), bn(c)
            if projection:
                self.proj, self.proj_bn = nn.Conv2d(c_in, c, 1, stride, bias=False), bn(c)
            else:
                self.proj = self.proj_bn = None

        def forward(self, x):
            h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            if self.proj is not None:
                x = self.proj_bn(self.proj(x))
            return F.relu(h + x)

    class ResNet20(nn.Module):
        def __init__(self, spec: Spec):
            super().__init__()
            self.stem_conv, self.stem_bn = conv3(spec.image[2], 16, 1), bn(16)
            blocks, c_in = [], 16
            for c, stride, projection in RESNET_BLOCKS:
                blocks.append(Block(c_in, c, stride, projection))
                c_in = c
            self.blocks = nn.ModuleList(blocks)
            self.dense = nn.Linear(c_in, spec.classes)

        def forward(self, x):
            x = F.relu(self.stem_bn(self.stem_conv(x)))
            for block in self.blocks:
                x = block(x)
            return self.dense(x.mean(dim=(2, 3)))

    return LeNet, ResNet20


def build_torch(problem: Problem, spec: Spec, *, channels_last: bool = False) -> Impl:
    import torch

    threads = os.cpu_count() or 1
    LeNet, ResNet20 = torch_modules()
    model = (LeNet if spec.key == "lenet" else ResNet20)(spec)
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for path, p in weight_layers(problem.params):
            layer = submodule(model, path)
            W = p["W"]
            if W.ndim == 4:  # HWIO -> OIHW
                W = W.transpose(3, 2, 0, 1)
            else:  # (n_in, n_out) -> (n_out, n_in), NCHW flatten order for LeNet's dense1
                W = (chw_rows(W) if path == ("dense1",) else W).T
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
            if "b" in p:
                layer.bias.copy_(torch.from_numpy(p["b"]))
    x = torch.from_numpy(np.ascontiguousarray(problem.x.transpose(0, 3, 1, 2)))
    y = torch.from_numpy(problem.y.astype(np.int64))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    cell: dict[str, Any] = {}

    def run(calls: int) -> None:  # eager on the CPU: each step has finished when it returns
        torch.set_num_threads(threads)  # a process-wide setting: each row sets its own
        for _ in range(calls):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        cell["loss"] = loss.detach()

    layout = "channels_last" if channels_last else "NCHW"
    name = f"PyTorch eager, {layout}, {threads} thread{'s' if threads > 1 else ''}"
    losses = lambda: np.atleast_1d(cell["loss"].double().numpy())
    return Impl(name, "peer", run, losses=losses, n_params=n_params)


PEERS = [  # (row name, modules it needs, builder)
    ("Flax Linen", ("flax", "optax"), build_flax_linen),
    ("Flax NNX", ("flax", "optax"), build_flax_nnx),
    ("Equinox", ("equinox", "optax"), build_equinox),
    ("PyTorch eager, NCHW", ("torch",), build_torch),
    (
        "PyTorch eager, channels_last",
        ("torch",),
        functools.partial(build_torch, channels_last=True),
    ),
]


def build_all(problem: Problem, spec: Spec, *, scan: bool = True) -> list[Impl]:
    """raw JAX (the baseline), fundl, the peers, then the two scan-fused loops."""
    impls = [build_raw(problem, spec), build_fundl_row(problem, spec, scan=False)]
    for name, modules, builder in PEERS:
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            impls.append(skipped(name, "peer", "not installed"))
            continue
        impls.append(builder(problem, spec))
    if not scan:
        return impls
    return impls + [build_raw_scan(problem, spec), build_fundl_row(problem, spec, scan=True)]


# --- checks --------------------------------------------------------------------------


def check(impls: list[Impl], spec: Spec) -> tuple[str, list[str]]:
    """Run each implementation (this also compiles it): the checks' table and failures.

    Per-step rows: step 1, then CHECK_STEPS − 1 more on the same batch. Scan-fused rows:
    one call, whose first step is on the same batch.
    """
    failures, rows = [], {}
    for impl in impls:
        if impl.run is None:
            continue
        impl.run(1)
        first = float(impl.losses()[0])
        last = math.nan
        if impl.steps_per_call == 1:
            impl.run(CHECK_STEPS - 1)
            last = float(impl.losses()[-1])
        rows[impl.name] = (first, last)
    base_first, _ = rows["raw JAX"]
    base_params = next(i.n_params for i in impls if i.role == "raw")
    lines = [
        f"### {spec.label}: checks",
        "",
        (
            f"Loss at step 1 and after {CHECK_STEPS} steps on the same batch; every row but "
            "fundl starts from the same weights, so its step-1 loss must equal raw JAX's "
            f"(within {LOSS_TOLERANCE:g})."
        ),
        "",
        f"| implementation | parameters | loss, step 1 | loss, step {CHECK_STEPS} | checks |",
        "|---|---:|---:|---:|---|",
    ]
    for impl in impls:
        if impl.run is None:
            lines.append(f"| {impl.name} | {impl.note} | | | |")
            continue
        first, last = rows[impl.name]
        bad = []
        if impl.n_params != base_params:
            bad.append(f"{impl.n_params:,} parameters, raw JAX has {base_params:,}")
        if not math.isfinite(first):
            bad.append(f"loss {first}")
        elif not impl.own_init and abs(first - base_first) > LOSS_TOLERANCE:
            bad.append(f"step-1 loss {first:.6f} != raw JAX's {base_first:.6f}")
        if impl.steps_per_call == 1 and not last < first:
            bad.append(f"loss did not fall in {CHECK_STEPS} steps ({first:.6f} -> {last:.6f})")
        failures += [f"{spec.label}, {impl.name}: {b}" for b in bad]
        verdict = "; ".join(bad) if bad else "ok" + (" (own init)" if impl.own_init else "")
        cells = [f"{impl.n_params:,}", f"{first:.6f}", "—" if math.isnan(last) else f"{last:.6f}"]
        lines.append(f"| {impl.name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines), failures


# --- report --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*SPECS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds")
    parser.add_argument(
        "--no-scan", action="store_true", help="leave out the scan-fused rows (slow on CPU)"
    )
    parser.add_argument("--out", help="also write the Markdown report to this path")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    keys = list(SPECS) if args.model == "all" else [args.model]

    header = [
        "## fundl CNN train step benchmark",
        "",
        f"{time.strftime('%Y-%m-%d')}; {versions(PEER_MODULES)}",
        "",
    ]
    if isinstance(error := fundl_models(), ImportError):
        header += [
            f"Note: the fundl rows are skipped: fundl.models is not importable ({error}).",
            "",
        ]
    print("\n".join(header), flush=True)
    sections, failures = header, []
    for key in keys:
        spec = SPECS[key]
        problem = make_problem(spec)
        impls = build_all(problem, spec, scan=not args.no_scan)
        text, failed = check(impls, spec)
        failures += failed
        print(text + "\n", flush=True)
        rates = measure(impls, rounds, warmup=0)  # check() compiled and ran each
        timing = table(None, impls, rates, title=f"{spec.label}: train step")
        print(timing + "\n", flush=True)
        sections += [text, "", timing, ""]
    if failures:
        text = "### Failed checks\n\n" + "\n".join(f"- {f}" for f in failures)
        print(text, flush=True)
        sections.append(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(sections) + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
