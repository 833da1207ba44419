"""Steps/s of a compiled MLP train step: fundl vs raw JAX, Flax, Equinox, Haiku and PyTorch.

Every candidate trains the same MLP (ReLU hidden layers, logits out, softmax
cross-entropy on integer labels, Adam with lr 1e-3) from the same initial weights on
the same data, already on the device:

- fundl: ``fundl.train.make_train_step`` on ``fundl.mlp`` with
  ``fundl.losses.softmax_cross_entropy`` and ``fundl.optim.adam`` (hand-written rules).
- raw JAX: the same model in plain ``jax.numpy`` (z = x Wᵀ + b, relu) on the same
  parameter dict (``{"dense1": {"W": (n_out, n_in), "b": (n_out,)}, ...}``), JAX
  autodiff of a ``jax.nn.log_softmax`` cross-entropy and a hand-written Adam whose state
  is a plain tuple, in ``jax.jit(..., donate_argnums=(0, 1))``: the floor a library on
  JAX can reach.
- peers, each row "not installed" when its package is missing: Flax NNX
  (``nnx.Linear``, ``nnx.Optimizer``, ``nnx.jit``), Flax Linen (``nn.Dense``,
  ``jax.jit``), Equinox (``eqx.nn.Linear``, ``eqx.filter_jit``), Haiku (``hk.Linear``,
  ``jax.jit``), all with ``optax.adam``; PyTorch eager on the CPU (``nn.Sequential``,
  ``torch.optim.Adam``) with its default thread count and with one thread.
- scan-fused: k steps per call inside one ``lax.scan`` over pre-batched arrays of shape
  (k, batch, ...): ``fundl.train.make_scan_steps`` vs the raw step under ``jax.lax.scan``.
- with batch norm and dropout: the same MLP with ``Dense → BatchNorm → ReLU → Dropout
  0.2`` hidden layers (batch statistics, running statistics updated, a dropout mask per
  layer from the step's own key), fundl's stateful step (``stateful=True``, a
  ``TrainState``) against the same model, running-statistics update and key handling
  written in raw JAX (autodiff through the batch statistics), per step and scan-fused.

Method: every candidate is compiled and warmed up first, and the calls in one timed
block are chosen so that a block takes about 0.15 s. Then, round after round, each
candidate runs one block, synced once at its end (``block_until_ready``); the order
rotates each round, so machine noise and position hit all alike. Reported: the median
steps/s over the rounds; the ratio to raw JAX's per-step loop, as the median over the
rounds of the two rates in the same round (noise shared by a round cancels); and the
spread, the interquartile range of a row's rates over their median. First calls (trace,
compile and one step) of fundl's and raw JAX's steps are timed in fresh processes,
alternating. Last come the issue's targets, each marked met or not.

The peers are the optional ``bench`` extra (optax, flax, equinox, dm-haiku, torch).

Run:   python benchmarks/train_step.py --rounds 15 --out benchmarks/results.md
Smoke: python benchmarks/train_step.py --quick --only small
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import fundl

LEARNING_RATE = 1e-3
SCAN_STEPS = 50  # k: steps fused into one scan call
BLOCK_SECONDS = 0.15  # target length of one timed block


class Size(NamedTuple):
    key: str  # the --only name
    sizes: tuple[int, ...]  # (n_in, hidden..., n_classes)
    batch: int

    @property
    def label(self) -> str:
        return f"MLP {'-'.join(map(str, self.sizes))}, batch {self.batch}"


SIZES = {
    "large": Size("large", (784, 512, 256, 10), 128),
    "small": Size("small", (64, 32, 10), 32),
}


class Candidate(NamedTuple):
    name: str
    role: Literal["raw", "fundl", "peer", "raw scan", "fundl scan"]
    run: Callable[[int], None] | None  # run(calls): that many calls, synced once at the end
    steps_per_call: int = 1
    note: str = ""  # why there is no run


class Problem(NamedTuple):
    """What every candidate shares: initial weights and data, as NumPy arrays."""

    layers: list[tuple[np.ndarray, np.ndarray]]  # per layer: W (n_out, n_in), b (n_out,)
    x: np.ndarray  # (batch, n_in) float32
    y: np.ndarray  # (batch,) int32 labels
    xs: np.ndarray  # (k, batch, n_in): k batches for the scan-fused loops
    ys: np.ndarray  # (k, batch)


def make_problem(size: Size, *, seed: int = 0) -> Problem:
    """fundl's initial weights (He for hidden layers, Xavier for the logits), random data."""
    params = fundl.mlp(list(size.sizes), "relu").init(jax.random.key(seed))
    layers = [
        (np.asarray(params[f"dense{i}"]["W"]), np.asarray(params[f"dense{i}"]["b"]))
        for i in range(1, len(size.sizes))
    ]
    rng = np.random.default_rng(seed)
    n_in, n_classes = size.sizes[0], size.sizes[-1]
    x = rng.standard_normal((size.batch, n_in), dtype=np.float32)
    y = rng.integers(0, n_classes, size.batch).astype(np.int32)
    xs = rng.standard_normal((SCAN_STEPS, size.batch, n_in), dtype=np.float32)
    ys = rng.integers(0, n_classes, (SCAN_STEPS, size.batch)).astype(np.int32)
    return Problem(layers, x, y, xs, ys)


def device_params(problem: Problem) -> dict[str, dict[str, jax.Array]]:
    """Fresh device buffers (each candidate donates its own), in fundl's layout."""
    return {
        f"dense{i}": {"W": jnp.asarray(W), "b": jnp.asarray(b)}
        for i, (W, b) in enumerate(problem.layers, start=1)
    }


def jax_loop(step: Callable[..., Any], params: Any, opt_state: Any, *batch: Any):
    """run(calls) for a step ``(params, opt_state, *batch) -> (params, opt_state, metrics)``."""
    carry = [params, opt_state]

    def run(calls: int) -> None:
        params, opt_state = carry
        for _ in range(calls):
            params, opt_state, metrics = step(params, opt_state, *batch)
        jax.block_until_ready((params, opt_state, metrics))
        carry[:] = [params, opt_state]

    return run


# --- fundl ---------------------------------------------------------------------------


def fundl_loss(model: fundl.Sequential) -> Callable[..., jax.Array]:
    def loss_fn(params, batch):
        x, y = batch
        return fundl.losses.softmax_cross_entropy(model.apply(params, x), y)

    return loss_fn


def build_fundl(problem: Problem, size: Size) -> Candidate:
    model = fundl.mlp(list(size.sizes), "relu")
    optimizer = fundl.optim.adam(LEARNING_RATE)
    step = fundl.train.make_train_step(fundl_loss(model), optimizer)
    params = device_params(problem)
    batch = (jnp.asarray(problem.x), jnp.asarray(problem.y))
    return Candidate("fundl", "fundl", jax_loop(step, params, optimizer.init(params), batch))


def build_fundl_scan(problem: Problem, size: Size) -> Candidate:
    model = fundl.mlp(list(size.sizes), "relu")
    optimizer = fundl.optim.adam(LEARNING_RATE)
    steps = fundl.train.make_scan_steps(fundl_loss(model), optimizer)
    params = device_params(problem)
    batches = (jnp.asarray(problem.xs), jnp.asarray(problem.ys))
    run = jax_loop(steps, params, optimizer.init(params), batches)
    return Candidate(f"fundl, scan-fused (k={SCAN_STEPS})", "fundl scan", run, SCAN_STEPS)


# --- raw JAX: the same model, loss and Adam written out by hand ----------------------


def raw_forward(params, x):
    n_layers = len(params)
    for i in range(1, n_layers):
        x = jax.nn.relu(x @ params[f"dense{i}"]["W"].T + params[f"dense{i}"]["b"])
    return x @ params[f"dense{n_layers}"]["W"].T + params[f"dense{n_layers}"]["b"]


def raw_loss(params, x, y):
    log_p = jax.nn.log_softmax(raw_forward(params, x))
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))


def raw_adam_init(params):
    # Two separate zero trees: a donated state must not hold one buffer twice.
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
    return jnp.zeros([], jnp.int32), zeros(), zeros()


def raw_adam_update(params, opt_state, grads, *, lr=LEARNING_RATE, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written out: (new params, new state)."""
    count, mu, nu = opt_state
    count = count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nu, grads)
    t = count.astype(jnp.float32)
    c1, c2 = 1 - b1**t, 1 - b2**t
    update = lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps)  # noqa: E731
    return jax.tree.map(update, params, mu, nu), (count, mu, nu)


def raw_train_step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(raw_loss)(params, x, y)
    params, opt_state = raw_adam_update(params, opt_state, grads)
    return params, opt_state, {"loss": loss}


def raw_scan_steps(params, opt_state, xs, ys):
    def body(carry, batch):
        params, opt_state, metrics = raw_train_step(*carry, *batch)
        return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (xs, ys))
    return params, opt_state, metrics


def build_raw(problem: Problem, size: Size) -> Candidate:
    step = jax.jit(raw_train_step, donate_argnums=(0, 1))
    params = device_params(problem)
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return Candidate("raw JAX", "raw", jax_loop(step, params, raw_adam_init(params), x, y))


def build_raw_scan(problem: Problem, size: Size) -> Candidate:
    steps = jax.jit(raw_scan_steps, donate_argnums=(0, 1))
    params = device_params(problem)
    xs, ys = jnp.asarray(problem.xs), jnp.asarray(problem.ys)
    run = jax_loop(steps, params, raw_adam_init(params), xs, ys)
    return Candidate(f"raw JAX, scan-fused (k={SCAN_STEPS})", "raw scan", run, SCAN_STEPS)


# --- with batch norm and dropout ------------------------------------------------------

DROP_RATE = 0.2
BN_MOMENTUM = 0.9  # the weight of the old running statistics (fundl's convention)


def regularized_model(size: Size) -> fundl.Sequential:
    layers: list[Any] = []
    for n in size.sizes[1:-1]:
        layers += [
            fundl.Dense(n),
            fundl.BatchNorm(momentum=BN_MOMENTUM),
            "relu",
            fundl.Dropout(DROP_RATE),
        ]
    return fundl.Sequential(layers + [fundl.Dense(size.sizes[-1])], input_shape=size.sizes[:1])


def fundl_regularized_loss(model: fundl.Sequential) -> Callable[..., Any]:
    def loss_fn(params, batch, *, state, key, train):
        x, y = batch
        logits, state = model.apply_with_state(params, state, x, key=key, train=train)
        return fundl.losses.softmax_cross_entropy(logits, y), {}, state

    return loss_fn


def state_loop(step: Callable[..., Any], state: Any, *batch: Any):
    """run(calls) for a step ``(state, *batch) -> (state, metrics)``."""
    carry = [state]

    def run(calls: int) -> None:
        (state,) = carry
        for _ in range(calls):
            state, metrics = step(state, *batch)
        jax.block_until_ready((state, metrics))
        carry[:] = [state]

    return run


def _fundl_regularized_start(size: Size):
    model = regularized_model(size)
    params, model_state = model.init_with_state(jax.random.key(0))
    optimizer = fundl.optim.adam(LEARNING_RATE)
    ts = fundl.train.TrainState.create(params, optimizer, model_state=model_state, key=1)
    return model, optimizer, ts


def build_fundl_regularized(problem: Problem, size: Size) -> Candidate:
    model, optimizer, ts = _fundl_regularized_start(size)
    step = fundl.train.make_train_step(fundl_regularized_loss(model), optimizer, stateful=True)
    batch = (jnp.asarray(problem.x), jnp.asarray(problem.y))
    return Candidate("fundl", "fundl", state_loop(step, ts, batch))


def build_fundl_regularized_scan(problem: Problem, size: Size) -> Candidate:
    model, optimizer, ts = _fundl_regularized_start(size)
    steps = fundl.train.make_scan_steps(fundl_regularized_loss(model), optimizer, stateful=True)
    batches = (jnp.asarray(problem.xs), jnp.asarray(problem.ys))
    run = state_loop(steps, ts, batches)
    return Candidate(f"fundl, scan-fused (k={SCAN_STEPS})", "fundl scan", run, SCAN_STEPS)


def raw_regularized_forward(params, stats, x, key):
    """Dense → batch norm (batch statistics) → relu → dropout per hidden layer; logits."""
    n_hidden = len(stats)
    keys = jax.random.split(key, n_hidden)
    new_stats = []
    for i in range(n_hidden):
        z = x @ params[f"dense{i + 1}"]["W"].T + params[f"dense{i + 1}"]["b"]
        # the mean once, then the variance of the centred values (jnp.var would take the
        # mean again: a slower baseline than a careful hand-written step)
        mean = jnp.mean(z, axis=0)
        centred = z - mean
        var = jnp.mean(centred * centred, axis=0)
        bn = params[f"batch_norm{i + 1}"]
        z = centred * (jax.lax.rsqrt(var + 1e-5) * bn["gamma"]) + bn["beta"]
        n = z.shape[0]
        running_mean, running_var = stats[i]
        new_stats.append(
            (
                BN_MOMENTUM * running_mean + (1 - BN_MOMENTUM) * jax.lax.stop_gradient(mean),
                BN_MOMENTUM * running_var
                + (1 - BN_MOMENTUM) * jax.lax.stop_gradient(var) * (n / (n - 1)),
            )
        )
        a = jax.nn.relu(z)
        keep = jax.random.bernoulli(keys[i], 1 - DROP_RATE, a.shape)
        x = jnp.where(keep, a / (1 - DROP_RATE), 0.0)
    last = f"dense{n_hidden + 1}"
    return x @ params[last]["W"].T + params[last]["b"], tuple(new_stats)


def raw_regularized_step(state, x, y):
    params, opt_state, stats, key, step = state

    def loss(params):
        logits, new_stats = raw_regularized_forward(params, stats, x, jax.random.fold_in(key, step))
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)), new_stats

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    params, opt_state = raw_adam_update(params, opt_state, grads)
    return (params, opt_state, stats, key, step + 1), {"loss": value}


def raw_regularized_scan(state, xs, ys):
    return jax.lax.scan(lambda carry, batch: raw_regularized_step(carry, *batch), state, (xs, ys))


def _raw_regularized_start(size: Size):
    _, _, ts = _fundl_regularized_start(size)  # the same initial weights
    params = jax.tree.map(jnp.copy, ts.params)
    stats = tuple((jnp.zeros(n), jnp.ones(n)) for n in size.sizes[1:-1])
    return (params, raw_adam_init(params), stats, jax.random.key(1), jnp.zeros([], jnp.int32))


def build_raw_regularized(problem: Problem, size: Size) -> Candidate:
    step = jax.jit(raw_regularized_step, donate_argnums=0)
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return Candidate("raw JAX", "raw", state_loop(step, _raw_regularized_start(size), x, y))


def build_raw_regularized_scan(problem: Problem, size: Size) -> Candidate:
    steps = jax.jit(raw_regularized_scan, donate_argnums=0)
    xs, ys = jnp.asarray(problem.xs), jnp.asarray(problem.ys)
    run = state_loop(steps, _raw_regularized_start(size), xs, ys)
    return Candidate(f"raw JAX, scan-fused (k={SCAN_STEPS})", "raw scan", run, SCAN_STEPS)


def build_regularized(problem: Problem, size: Size) -> list[Candidate]:
    """The batch-norm-and-dropout group: raw JAX, fundl, then both scan-fused."""
    return [
        build_raw_regularized(problem, size),
        build_fundl_regularized(problem, size),
        build_raw_regularized_scan(problem, size),
        build_fundl_regularized_scan(problem, size),
    ]


# --- peers ---------------------------------------------------------------------------


def optax_loss(logits, y):
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def build_flax_nnx(problem: Problem, size: Size) -> Candidate:
    import optax
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, sizes, rngs):
            pairs = zip(sizes[:-1], sizes[1:])
            self.layers = nnx.List([nnx.Linear(n_in, n_out, rngs=rngs) for n_in, n_out in pairs])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = nnx.relu(layer(x))
            return self.layers[-1](x)

    model = MLP(size.sizes, nnx.Rngs(0))
    for layer, (W, b) in zip(model.layers, problem.layers):
        layer.kernel[...] = jnp.asarray(W.T)  # Flax kernels are (n_in, n_out)
        layer.bias[...] = jnp.asarray(b)
    optimizer = nnx.Optimizer(model, optax.adam(LEARNING_RATE), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: optax_loss(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)

    def run(calls: int) -> None:  # NNX updates the model and optimizer in place
        for _ in range(calls):
            loss = step(model, optimizer, x, y)
        jax.block_until_ready((loss, nnx.state(model)))

    return Candidate("Flax NNX", "peer", run)


def build_flax_linen(problem: Problem, size: Size) -> Candidate:
    import flax.linen as nn
    import optax

    class MLP(nn.Module):
        sizes: tuple[int, ...]

        @nn.compact
        def __call__(self, x):
            for n_out in self.sizes[1:-1]:
                x = nn.relu(nn.Dense(n_out)(x))
            return nn.Dense(self.sizes[-1])(x)

    model = MLP(size.sizes)
    params = {
        "params": {
            f"Dense_{i}": {"kernel": jnp.asarray(W.T), "bias": jnp.asarray(b)}
            for i, (W, b) in enumerate(problem.layers)
        }
    }
    tx = optax.adam(LEARNING_RATE)

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: optax_loss(model.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return Candidate("Flax Linen", "peer", jax_loop(step, params, tx.init(params), x, y))


def build_equinox(problem: Problem, size: Size) -> Candidate:
    import equinox as eqx
    import optax

    class MLP(eqx.Module):
        layers: list

        def __call__(self, x):  # one example: (n_in,) -> (n_classes,)
            for layer in self.layers[:-1]:
                x = jax.nn.relu(layer(x))
            return self.layers[-1](x)

    keys = jax.random.split(jax.random.key(0), len(problem.layers))
    layers = []
    for (W, b), key in zip(problem.layers, keys):  # Equinox weights are (n_out, n_in), as fundl's
        layer = eqx.nn.Linear(W.shape[1], W.shape[0], key=key)
        arrays = (jnp.asarray(W), jnp.asarray(b))
        layers.append(eqx.tree_at(lambda l: (l.weight, l.bias), layer, arrays))
    model = MLP(layers)
    tx = optax.adam(LEARNING_RATE)

    @eqx.filter_jit
    def step(model, opt_state, x, y):
        loss, grads = eqx.filter_value_and_grad(lambda m: optax_loss(jax.vmap(m)(x), y))(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    opt_state = tx.init(eqx.filter(model, eqx.is_array))
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return Candidate("Equinox", "peer", jax_loop(step, model, opt_state, x, y))


def build_haiku(problem: Problem, size: Size) -> Candidate:
    import haiku as hk
    import optax

    def forward(x):
        for n_out in size.sizes[1:-1]:
            x = jax.nn.relu(hk.Linear(n_out)(x))
        return hk.Linear(size.sizes[-1])(x)

    model = hk.without_apply_rng(hk.transform(forward))
    names = ["linear"] + [f"linear_{i}" for i in range(1, len(problem.layers))]
    params = {
        name: {"w": jnp.asarray(W.T), "b": jnp.asarray(b)}
        for name, (W, b) in zip(names, problem.layers)
    }
    tx = optax.adam(LEARNING_RATE)

    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: optax_loss(model.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(train_step, donate_argnums=(0, 1))
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    return Candidate("Haiku", "peer", jax_loop(step, params, tx.init(params), x, y))


@functools.cache
def torch_default_threads() -> int:
    """torch's own thread count, read once, before any row sets its own."""
    import torch

    return torch.get_num_threads()


def build_torch(problem: Problem, size: Size, *, threads: int | None = None) -> Candidate:
    import torch

    default = torch_default_threads()
    threads = threads or default
    layers: list[Any] = []
    for W, b in problem.layers:
        linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(W))
            linear.bias.copy_(torch.tensor(b))
        layers += [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    x, y = torch.tensor(problem.x), torch.tensor(problem.y, dtype=torch.long)

    def run(calls: int) -> None:  # eager on the CPU: each step has finished when it returns
        torch.set_num_threads(threads)  # a process-wide setting: each row sets its own
        for _ in range(calls):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()

    plural = "s" if threads > 1 else ""
    label = f"{threads} thread{plural}" + (" (the default)" if threads == default else "")
    return Candidate(f"PyTorch eager, {label}", "peer", run)


PEERS = [  # (row name, modules it needs, builder)
    ("Flax NNX", ("flax", "optax"), build_flax_nnx),
    ("Flax Linen", ("flax", "optax"), build_flax_linen),
    ("Equinox", ("equinox", "optax"), build_equinox),
    ("Haiku", ("haiku", "optax"), build_haiku),
    ("PyTorch eager", ("torch",), build_torch),
    # torch's default threads can stall at each parallel region while other processes
    # hold a core; one thread shows what the model costs without that.
    ("PyTorch eager, 1 thread", ("torch",), functools.partial(build_torch, threads=1)),
]


def build_all(problem: Problem, size: Size) -> list[Candidate]:
    """raw JAX (the baseline), fundl, the peers, then the two scan-fused loops."""
    candidates = [build_raw(problem, size), build_fundl(problem, size)]
    for name, modules, builder in PEERS:
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            candidates.append(Candidate(name, "peer", None, note="not installed"))
            continue
        peer = builder(problem, size)
        if peer.name not in {c.name for c in candidates}:  # torch's default may be 1 thread
            candidates.append(peer)
    return candidates + [build_raw_scan(problem, size), build_fundl_scan(problem, size)]


# --- timing core ---------------------------------------------------------------------


def block_seconds(run: Callable[[int], None], calls: int) -> float:
    start = time.perf_counter()
    run(calls)
    return time.perf_counter() - start


def calls_per_block(run: Callable[[int], None]) -> int:
    """How many calls make a block of about BLOCK_SECONDS (the run is compiled and warm)."""
    calls = 1
    while (seconds := block_seconds(run, calls)) < BLOCK_SECONDS / 4:
        calls *= 4
    return max(1, round(calls * BLOCK_SECONDS / seconds))


def measure(candidates: list[Candidate], rounds: int, *, warmup: int = 3) -> dict[str, list[float]]:
    """Steps/s of each candidate in each round, the candidates interleaved.

    ``warmup`` calls of each first (compile and settle; 0 when the caller has run them).
    """
    timed = [c for c in candidates if c.run is not None]
    for c in timed:
        if warmup:
            c.run(warmup)
    calls = {c.name: calls_per_block(c.run) for c in timed}
    rates: dict[str, list[float]] = {c.name: [] for c in timed}
    for r in range(rounds):
        shift = r % len(timed)
        for c in timed[shift:] + timed[:shift]:
            seconds = block_seconds(c.run, calls[c.name])
            rates[c.name].append(calls[c.name] * c.steps_per_call / seconds)
    return rates


def paired(rates: dict[str, list[float]], a: str, b: str) -> float:
    """Median over the rounds of a's steps/s ÷ b's in the same round."""
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


def spread(values: list[float]) -> float:
    """Interquartile range over the median: how noisy the rounds were."""
    if len(values) < 4:
        return float("nan")
    q1, _, q3 = statistics.quantiles(values, n=4)
    return (q3 - q1) / statistics.median(values)


# --- first call: trace + compile + one step, in a fresh process ----------------------


def first_call_seconds(which: Literal["fundl", "raw"], size: Size) -> float:
    """Build a fresh step and time its first call (weights and data are made before)."""
    problem = make_problem(size)
    params = device_params(problem)
    x, y = jnp.asarray(problem.x), jnp.asarray(problem.y)
    if which == "fundl":
        opt_state = fundl.optim.adam(LEARNING_RATE).init(params)
        jax.block_until_ready((params, opt_state, x, y))
        start = time.perf_counter()
        model = fundl.mlp(list(size.sizes), "relu")
        step = fundl.train.make_train_step(fundl_loss(model), fundl.optim.adam(LEARNING_RATE))
        jax.block_until_ready(step(params, opt_state, (x, y)))
    else:
        opt_state = raw_adam_init(params)
        jax.block_until_ready((params, opt_state, x, y))
        start = time.perf_counter()
        step = jax.jit(raw_train_step, donate_argnums=(0, 1))
        jax.block_until_ready(step(params, opt_state, x, y))
    return time.perf_counter() - start


def first_calls(size: Size, repeats: int) -> dict[str, list[float]]:
    """Seconds of each first call, each in its own fresh process, alternating the order."""
    seconds: dict[str, list[float]] = {"fundl": [], "raw": []}
    for r in range(repeats):
        for which in ("fundl", "raw") if r % 2 == 0 else ("raw", "fundl"):
            command = [sys.executable, __file__, "--first-call", which, "--only", size.key]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            seconds[which].append(json.loads(out.stdout.splitlines()[-1]))
    return seconds


# --- report --------------------------------------------------------------------------


def versions(modules: tuple[str, ...] = ("flax", "equinox", "optax", "haiku", "torch")) -> str:
    found = [f"jax {jax.__version__}"]
    for module in modules:
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            found.append(f"{module} not installed")
            continue
        if module == "torch":
            found[-1] += f" ({torch_default_threads()} threads by default)"
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{', '.join(found)}; python {platform.python_version()}; JAX device "
        f"{jax.devices()[0].platform}; {os.cpu_count()} CPU cores ({cpu})"
    )


def table(
    size: Size, candidates: list[Candidate], rates: dict[str, list[float]], *, title: str = ""
) -> str:
    lines = [
        f"### {title or size.label}",
        "",
        f"Median of {len(rates['raw JAX'])} interleaved rounds. Ratio: the candidate's steps/s "
        "÷ raw JAX's in the same round, median over the rounds (> 1 is faster). Spread: "
        "interquartile range ÷ median of the row's steps/s.",
        "",
        "| train step | steps/s | µs/step | ratio to raw JAX | spread |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in candidates:
        if c.run is None:
            lines.append(f"| {c.name} | {c.note} | | | |")
            continue
        median = statistics.median(rates[c.name])
        ratio, noise = paired(rates, c.name, "raw JAX"), spread(rates[c.name])
        rate = f"{median:,.0f}" if median >= 100 else f"{median:.3g}"  # a CNN: a few steps/s
        cells = [rate, f"{1e6 / median:,.1f}", f"{ratio:.3f}", f"{noise:.1%}"]
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_call_table(firsts: dict[Size, dict[str, list[float]]]) -> str:
    lines = [
        "### First call (trace + compile + one step), each in a fresh process",
        "",
        "| model | fundl s (median) | raw JAX s (median) | fundl ÷ raw | fundl runs | raw JAX runs"
        " |",
        "|---|---:|---:|---:|---|---|",
    ]
    for size, seconds in firsts.items():
        f, r = statistics.median(seconds["fundl"]), statistics.median(seconds["raw"])
        runs = {k: ", ".join(f"{s:.3f}" for s in v) for k, v in seconds.items()}
        cells = [f"{f:.3f}", f"{r:.3f}", f"{f / r:.2f}", runs["fundl"], runs["raw"]]
        lines.append(f"| {size.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(
    runs: dict[Size, tuple[list[Candidate], dict[str, list[float]]]],
    firsts: dict[Size, dict[str, list[float]]],
    regularized: dict[Size, tuple[list[Candidate], dict[str, list[float]]]],
) -> str:
    """The issue's targets, each marked met or not (ratios paired by round)."""
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines = ["### Targets", ""]
    for size, (candidates, rates) in runs.items():
        name = {c.role: c.name for c in candidates if c.role != "peer"}
        slower = 1 / paired(rates, "fundl", "raw JAX")
        lines.append(
            f"- {size.label}: fundl step time ≤ 1.02× raw JAX's: {slower:.3f}× — "
            f"{mark(slower <= 1.02)}"
        )
        peers = [c.name for c in candidates if c.role == "peer" and c.run is not None]
        if peers:
            fastest = min(peers, key=lambda peer: paired(rates, "fundl", peer))
            ratio = paired(rates, "fundl", fastest)
            lines.append(
                f"- {size.label}: fundl steps/s ≥ every peer's: fundl ÷ fastest peer "
                f"({fastest}) {ratio:.3f}× — {mark(ratio >= 1)}"
            )
        ratio = paired(rates, name["fundl scan"], name["raw scan"])
        lines.append(
            f"- {size.label}: fundl scan-fused ≥ 0.98× raw JAX scan-fused: "
            f"{ratio:.3f}× — {mark(ratio >= 0.98)}"
        )
    for size, (candidates, rates) in regularized.items():
        name = {c.role: c.name for c in candidates}
        slower = 1 / paired(rates, "fundl", "raw JAX")
        lines.append(
            f"- {size.label} with batch norm and dropout: fundl step time ≤ 1.05× raw JAX's: "
            f"{slower:.3f}× — {mark(slower <= 1.05)}"
        )
        slower = 1 / paired(rates, name["fundl scan"], name["raw scan"])
        lines.append(
            f"- {size.label} with batch norm and dropout: fundl scan-fused ≤ 1.05× raw JAX "
            f"scan-fused's step time: {slower:.3f}× — {mark(slower <= 1.05)}"
        )
    for size, seconds in firsts.items():
        f, r = statistics.median(seconds["fundl"]), statistics.median(seconds["raw"])
        lines.append(
            f"- {size.label}: fundl first call no slower than raw JAX's: {f:.3f} s vs "
            f"{r:.3f} s (medians) — {mark(f <= r)}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--first-call-repeats",
        type=int,
        default=5,
        help="fresh processes per first-call measurement (default 5)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(SIZES),
        default=["large", "small"],
        help="the sizes to run (default both)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 3 rounds and one first call each"
    )
    parser.add_argument("--out", help="also write the Markdown report to this path")
    parser.add_argument("--first-call", choices=["fundl", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_call:  # the fresh child process of first_calls
        print(json.dumps(first_call_seconds(args.first_call, SIZES[args.only[0]])))
        return
    rounds, repeats = (3, 1) if args.quick else (args.rounds, args.first_call_repeats)

    sections = ["## fundl train step benchmark", "", versions(), ""]
    print("\n".join(sections), flush=True)
    runs, firsts, regularized = {}, {}, {}
    for key in args.only:
        size = SIZES[key]
        problem = make_problem(size)
        candidates = build_all(problem, size)
        rates = measure(candidates, rounds)
        runs[size] = (candidates, rates)
        text = table(size, candidates, rates)
        print(text + "\n", flush=True)
        sections += [text, ""]
        candidates = build_regularized(problem, size)
        rates = measure(candidates, rounds)
        regularized[size] = (candidates, rates)
        text = table(size, candidates, rates, title=f"{size.label}, with batch norm and dropout")
        print(text + "\n", flush=True)
        sections += [text, ""]
        firsts[size] = first_calls(size, repeats)
    text = first_call_table(firsts) + "\n\n" + targets(runs, firsts, regularized)
    print(text)
    sections.append(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
