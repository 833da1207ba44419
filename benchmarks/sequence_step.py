"""Steps/s of a compiled sequence-model train step: fundl vs raw JAX, Flax, Equinox, PyTorch.

Two models, the same in every implementation:

- LSTM: one layer, batch-first, batch 32 of 64 steps, input width 128, hidden 256
  (395,264 parameters in PyTorch's layout: W_ih (4H, d), W_hh (4H, H), b_ih, b_hh,
  gate order i, f, g, o); zero initial state; the output is every hidden state
  (32, 64, 256). Initial weights: PyTorch's, uniform(−1/√H, 1/√H).
- Transformer encoder block, pre-LN: batch 16 of 128 tokens, d_model 256, 4 heads,
  FFN 1024 with exact (erf) GELU, LayerNorm eps 1e-5, no dropout (789,760 parameters)::

    h = x + W_o · MHA(LN1(x));  y = h + W_2 · gelu(W_1 · LN2(h) + b_1) + b_2

  Initial weights: uniform(−1/√fan_in, 1/√fan_in) for every projection and its bias,
  LayerNorm scale 1 and offset 0.

Both: loss = mean squared error of the output against a fixed random target; Adam (lr
1e-3, b1 0.9, b2 0.999, eps 1e-8). Data: one random batch, already on the device.

Implementations:

- raw JAX: ``lax.scan`` over time for the LSTM (PyTorch's gate order), the block in
  ``jax.numpy``, JAX autodiff, the hand-written Adam of train_step.py, ``jax.jit``
  donating the carried (params, opt state): the floor.
- fundl: ``fundl.nn.LSTM(256)`` (raw JAX's weights under ``{"l0": ...}``: same names)
  and ``fundl.nn.TransformerEncoderBlock(4, 1024, norm_first=True)`` (its own initial
  weights: exempt from the same-loss check), ``fundl.train.make_train_step`` and
  ``fundl.optim.adam``. Skipped with a note while the layer cannot be imported.
- Flax Linen (``nn.RNN(nn.OptimizedLSTMCell)``; ``nn.LayerNorm``,
  ``nn.MultiHeadDotProductAttention``, ``nn.Dense``), Equinox (``eqx.nn.LSTMCell``
  under ``lax.scan``, ``eqx.nn.MultiheadAttention`` with biases, vmapped over the
  batch), both with ``optax.adam`` and ``jax.jit`` / ``eqx.filter_jit`` donating;
  PyTorch eager on the CPU (``nn.LSTM(batch_first=True)``,
  ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True,
  dropout=0)``, ``torch.optim.Adam``). Flax's and Equinox's LSTM cells have one bias
  per gate, not two: they get b_ih + b_hh and 4H = 1,024 fewer parameters (the
  parameter check allows exactly that difference, and says so).
- scan-fused: k steps per call in one ``lax.scan`` over k batches (the first of them
  the batch above): raw JAX, and ``fundl.train.make_scan_steps``.

Checks, before the timing (cnn_step.py's): parameter count equal to raw JAX's (less the
stated bias difference); the step-1 loss equal to raw JAX's (the same weights in every
row but fundl's Transformer block); the loss fallen after a few steps. A failed check
exits with status 1 after the report.

Run:   python benchmarks/sequence_step.py --rounds 10 --out benchmarks/results_sequence.md
Smoke: python benchmarks/sequence_step.py --quick --model lstm
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from cnn_step import carry_loop, count, on_device
from jax import lax
from train_step import LEARNING_RATE, measure, raw_adam_init, raw_adam_update, table, versions

import fundl

CHECK_STEPS = 5
LOSS_TOLERANCE = 1e-4  # |step-1 loss − raw JAX's| (the loss is ~1)
LN_EPS = 1e-5
PEER_MODULES = ("flax", "equinox", "optax", "torch")


class Spec(NamedTuple):
    key: str
    label: str
    batch: int
    length: int
    width: int  # input width (LSTM) or d_model
    hidden: int  # LSTM hidden size, or the FFN width
    heads: int
    scan_steps: int


SPECS = {
    "lstm": Spec(
        "lstm", "LSTM, batch 32 × 64 steps, input 128, hidden 256", 32, 64, 128, 256, 0, 4
    ),
    "transformer": Spec(
        "transformer",
        "Transformer encoder block (pre-LN), batch 16 × 128 tokens, d 256, 4 heads, FFN 1024",
        16,
        128,
        256,
        1024,
        4,
        4,
    ),
}


class Impl(NamedTuple):
    name: str
    role: Literal["raw", "fundl", "peer", "raw scan", "fundl scan"]
    run: Callable[[int], None] | None
    steps_per_call: int = 1
    note: str = ""
    losses: Callable[[], np.ndarray] | None = None
    n_params: int = 0
    own_init: bool = False
    fewer_params: int = 0  # parameters the library's layout lacks by design (see the note)


def skipped(name: str, role: Any, note: str) -> Impl:
    return Impl(name, role, None, note=note)


# --- the problem ---------------------------------------------------------------------


class Problem(NamedTuple):
    params: dict[str, Any]
    x: np.ndarray  # (batch, L, width)
    y: np.ndarray  # the target, the output's shape
    xs: np.ndarray  # (k, ...), xs[0] = x
    ys: np.ndarray


def uniform(rng, shape, fan_in):
    bound = 1 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def lstm_init(rng, spec: Spec) -> dict[str, np.ndarray]:
    """PyTorch's names, shapes, gate order and init."""
    d, h = spec.width, spec.hidden
    return {
        "W_ih": uniform(rng, (4 * h, d), h),
        "W_hh": uniform(rng, (4 * h, h), h),
        "b_ih": uniform(rng, (4 * h,), h),
        "b_hh": uniform(rng, (4 * h,), h),
    }


def block_init(rng, spec: Spec) -> dict[str, Any]:
    """Dense weights stored (in, out); q, k, v separate."""
    d, f = spec.width, spec.hidden

    def dense(n_in, n_out):
        return {"W": uniform(rng, (n_in, n_out), n_in), "b": uniform(rng, (n_out,), n_in)}

    def ln():
        return {"g": np.ones(d, np.float32), "b": np.zeros(d, np.float32)}

    return {
        "ln1": ln(),
        "q": dense(d, d),
        "k": dense(d, d),
        "v": dense(d, d),
        "o": dense(d, d),
        "ln2": ln(),
        "ff1": dense(d, f),
        "ff2": dense(f, d),
    }


def make_problem(spec: Spec, *, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    params = (lstm_init if spec.key == "lstm" else block_init)(rng, spec)
    k, b, n = spec.scan_steps, spec.batch, spec.length
    out = spec.hidden if spec.key == "lstm" else spec.width
    xs = rng.standard_normal((k, b, n, spec.width), dtype=np.float32)
    ys = rng.standard_normal((k, b, n, out), dtype=np.float32)
    return Problem(params, xs[0], ys[0], xs, ys)


def mse(out, y):
    return jnp.mean((out - y) ** 2)


# --- raw JAX -------------------------------------------------------------------------


def raw_lstm(p, x):
    """x (B, T, d) → every hidden state (B, T, H); gates i, f, g, o."""
    H = p["W_hh"].shape[1]
    xw = jnp.einsum("btd,gd->tbg", x, p["W_ih"]) + (p["b_ih"] + p["b_hh"])  # all steps at once

    def cell(carry, xw_t):
        h, c = carry
        z = xw_t + h @ p["W_hh"].T
        i, f, g, o = (z[:, j * H : (j + 1) * H] for j in range(4))
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((x.shape[0], H), x.dtype)
    _, hs = lax.scan(cell, (zeros, zeros), xw)
    return jnp.swapaxes(hs, 0, 1)


def layer_norm(x, p):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(var + LN_EPS) * p["g"] + p["b"]


def raw_block(p, x, heads=4):
    B, L, d = x.shape
    dh = d // heads

    def proj(name, z):
        return z @ p[name]["W"] + p[name]["b"]

    h = layer_norm(x, p["ln1"])
    q, k, v = (proj(n, h).reshape(B, L, heads, dh) for n in "qkv")
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.float32(dh))
    a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v).reshape(B, L, d)
    x = x + proj("o", a)
    h = jax.nn.gelu(proj("ff1", layer_norm(x, p["ln2"])), approximate=False)
    return x + proj("ff2", h)


def raw_forward(spec: Spec):
    return raw_lstm if spec.key == "lstm" else raw_block


def raw_step_fn(forward):
    def step(carry, x, y):
        params, opt_state = carry
        value, grads = jax.value_and_grad(lambda p: mse(forward(p, x), y))(params)
        params, opt_state = raw_adam_update(params, opt_state, grads)
        return (params, opt_state), value

    return step


def raw_start(problem: Problem):
    params = on_device(problem.params)
    return (params, raw_adam_init(params))


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


def fundl_layer(spec: Spec) -> Any:
    """The fundl layer, or the error that says why not (the layers are being written)."""
    try:
        if spec.key == "lstm":
            return fundl.nn.LSTM(spec.hidden)
        return fundl.nn.TransformerEncoderBlock(spec.heads, spec.hidden, norm_first=True)
    except (AttributeError, ImportError, TypeError) as error:
        return error


def build_fundl_row(problem: Problem, spec: Spec, *, scan: bool) -> Impl:
    k = spec.scan_steps if scan else 1
    name, role = ("fundl", "fundl") if not scan else (f"fundl, scan-fused (k={k})", "fundl scan")
    layer = fundl_layer(spec)
    if isinstance(layer, Exception):
        what = "fundl.nn.LSTM" if spec.key == "lstm" else "fundl.nn.TransformerEncoderBlock"
        return skipped(name, role, f"skipped: {what} not available")
    params = layer.init(jax.random.key(0), (spec.length, spec.width))
    own_init = True
    if spec.key == "lstm":
        shared = {"l0": on_device(problem.params)}
        same = jax.tree.structure(shared) == jax.tree.structure(params) and all(
            a.shape == b.shape for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(params))
        )
        if same:
            params, own_init = shared, False

    def loss_fn(params, batch):
        x, y = batch
        return mse(layer.apply(params, x), y)

    optimizer = fundl.optim.adam(LEARNING_RATE)
    x, y = (problem.xs, problem.ys) if scan else (problem.x, problem.y)
    builder = fundl.train.make_scan_steps if scan else fundl.train.make_train_step
    compiled = builder(loss_fn, optimizer)

    def step(carry, batch):
        params, opt_state, metrics = compiled(*carry, batch)
        return (params, opt_state), metrics["loss"]

    n = count(params)
    run, losses = carry_loop(
        step, (params, optimizer.init(params)), (jnp.asarray(x), jnp.asarray(y))
    )
    return Impl(name, role, run, k, losses=losses, n_params=n, own_init=own_init)


# --- Flax Linen ----------------------------------------------------------------------


def optax_loop(apply: Callable[..., Any], params: Any, problem: Problem, jit=jax.jit):
    import optax

    optimizer = optax.adam(LEARNING_RATE)

    def step(carry, x, y):
        params, opt_state = carry
        value, grads = jax.value_and_grad(lambda p: mse(apply(p, x), y))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    compiled = jit(step, donate_argnums=0) if jit is jax.jit else jit(step, donate="all")
    return carry_loop(
        compiled, (params, optimizer.init(params)), jnp.asarray(problem.x), jnp.asarray(problem.y)
    )


def check_shapes(name: str, own: Any, shared: Any) -> None:
    """The library's own init and the shared weights must have one tree of shapes."""
    shape = lambda t: jax.tree.map(jnp.shape, t)
    if shape(own) != shape(shared):
        raise SystemExit(f"{name}: parameter layout differs:\n{shape(own)}\nvs\n{shape(shared)}")


def build_flax_linen(problem: Problem, spec: Spec) -> Impl:
    import flax.linen as nn

    p, H, d = problem.params, spec.hidden, spec.width
    x0 = jnp.asarray(problem.x)
    if spec.key == "lstm":
        model = nn.RNN(nn.OptimizedLSTMCell(H))
        own = model.init(jax.random.key(0), x0)["params"]
        W_ih, W_hh = p["W_ih"].reshape(4, H, d), p["W_hh"].reshape(4, H, H)
        b = (p["b_ih"] + p["b_hh"]).reshape(4, H)
        cell = {}
        for j, g in enumerate("ifgo"):
            cell["i" + g] = {"kernel": jnp.array(W_ih[j].T)}
            cell["h" + g] = {"kernel": jnp.array(W_hh[j].T), "bias": jnp.array(b[j])}
        shared = {"cell": cell}
        fewer = 4 * H
    else:
        heads, dh = spec.heads, d // spec.heads

        class Block(nn.Module):
            @nn.compact
            def __call__(self, x):
                h = nn.LayerNorm(epsilon=LN_EPS, name="ln1")(x)
                x = x + nn.MultiHeadDotProductAttention(heads, qkv_features=d, name="attn")(h, h)
                h = nn.gelu(
                    nn.Dense(spec.hidden, name="ff1")(nn.LayerNorm(epsilon=LN_EPS, name="ln2")(x)),
                    approximate=False,
                )
                return x + nn.Dense(d, name="ff2")(h)

        model = Block()
        own = model.init(jax.random.key(0), x0)["params"]
        dense = lambda q: {"kernel": jnp.array(q["W"]), "bias": jnp.array(q["b"])}
        ln = lambda q: {"scale": jnp.array(q["g"]), "bias": jnp.array(q["b"])}
        attn = {
            n: {
                "kernel": jnp.array(p[n]["W"].reshape(d, heads, dh)),
                "bias": jnp.array(p[n]["b"].reshape(heads, dh)),
            }
            for n, flax_name in zip("qkv", ("query", "key", "value"))
        }
        attn = {flax_name: attn[n] for n, flax_name in zip("qkv", ("query", "key", "value"))}
        attn["out"] = {
            "kernel": jnp.array(p["o"]["W"].reshape(heads, dh, d)),
            "bias": jnp.array(p["o"]["b"]),
        }
        shared = {
            "ln1": ln(p["ln1"]),
            "attn": attn,
            "ln2": ln(p["ln2"]),
            "ff1": dense(p["ff1"]),
            "ff2": dense(p["ff2"]),
        }
        fewer = 0
    check_shapes("Flax Linen", own, shared)
    run, losses = optax_loop(lambda params, x: model.apply({"params": params}, x), shared, problem)
    return Impl("Flax Linen", "peer", run, losses=losses, n_params=count(own), fewer_params=fewer)


# --- Equinox -------------------------------------------------------------------------


def build_equinox(problem: Problem, spec: Spec) -> Impl:
    import equinox as eqx

    p, H, d = problem.params, spec.hidden, spec.width
    key = jax.random.key(0)
    if spec.key == "lstm":
        cell = eqx.nn.LSTMCell(d, H, key=key)
        n_own = count(eqx.filter(cell, eqx.is_array))
        model = eqx.tree_at(
            lambda c: (c.weight_ih, c.weight_hh, c.bias),
            cell,
            (jnp.array(p["W_ih"]), jnp.array(p["W_hh"]), jnp.array(p["b_ih"] + p["b_hh"])),
        )

        def forward(model, x):  # x (B, T, d)
            zeros = jnp.zeros((x.shape[0], H), x.dtype)
            step = lambda carry, x_t: (jax.vmap(model)(x_t, carry),) * 2
            _, hcs = lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
            return jnp.swapaxes(hcs[0], 0, 1)

        fewer = 4 * H
    else:

        class Block(eqx.Module):
            ln1: eqx.nn.LayerNorm
            attn: eqx.nn.MultiheadAttention
            ln2: eqx.nn.LayerNorm
            ff1: eqx.nn.Linear
            ff2: eqx.nn.Linear

            def __call__(self, x):  # one example (L, d)
                h = jax.vmap(self.ln1)(x)
                x = x + self.attn(h, h, h)
                h = jax.nn.gelu(jax.vmap(self.ff1)(jax.vmap(self.ln2)(x)), approximate=False)
                return x + jax.vmap(self.ff2)(h)

        k1, k2, k3 = jax.random.split(key, 3)
        attn = eqx.nn.MultiheadAttention(
            spec.heads,
            d,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            key=k1,
        )
        block = Block(
            eqx.nn.LayerNorm(d, eps=LN_EPS),
            attn,
            eqx.nn.LayerNorm(d, eps=LN_EPS),
            eqx.nn.Linear(d, spec.hidden, key=k2),
            eqx.nn.Linear(spec.hidden, d, key=k3),
        )
        n_own = count(eqx.filter(block, eqx.is_array))
        T = lambda q: (jnp.array(q["W"].T), jnp.array(q["b"]))
        where = lambda b: (
            b.ln1.weight, b.ln1.bias,
            b.attn.query_proj.weight, b.attn.query_proj.bias,
            b.attn.key_proj.weight, b.attn.key_proj.bias,
            b.attn.value_proj.weight, b.attn.value_proj.bias,
            b.attn.output_proj.weight, b.attn.output_proj.bias,
            b.ln2.weight, b.ln2.bias,
            b.ff1.weight, b.ff1.bias, b.ff2.weight, b.ff2.bias,
        )  # fmt: skip
        values = (
            jnp.array(p["ln1"]["g"]), jnp.array(p["ln1"]["b"]),
            *T(p["q"]), *T(p["k"]), *T(p["v"]), *T(p["o"]),
            jnp.array(p["ln2"]["g"]), jnp.array(p["ln2"]["b"]),
            *T(p["ff1"]), *T(p["ff2"]),
        )  # fmt: skip
        check_shapes(
            "Equinox", [jnp.shape(a) for a in where(block)], [jnp.shape(a) for a in values]
        )
        model = eqx.tree_at(where, block, values)
        forward = lambda model, x: jax.vmap(model)(x)
        fewer = 0
    params, static = eqx.partition(model, eqx.is_array)
    run, losses = optax_loop(
        lambda params, x: forward(eqx.combine(params, static), x), params, problem
    )
    return Impl("Equinox", "peer", run, losses=losses, n_params=n_own, fewer_params=fewer)


# --- PyTorch -------------------------------------------------------------------------


def build_torch(problem: Problem, spec: Spec, *, threads: int | None = None) -> Impl:
    import torch

    threads = threads or (len(__import__("os").sched_getaffinity(0)))
    torch.manual_seed(0)
    p, d = problem.params, spec.width
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    with torch.no_grad():
        if spec.key == "lstm":
            model = torch.nn.LSTM(d, spec.hidden, batch_first=True)
            for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
                torch_name = ("weight_" if name[0] == "W" else "bias_") + name[2:] + "_l0"
                getattr(model, torch_name).copy_(t(p[name]))
            forward = lambda x: model(x)[0]
        else:
            model = torch.nn.TransformerEncoderLayer(
                d,
                spec.heads,
                spec.hidden,
                dropout=0.0,
                activation="gelu",
                layer_norm_eps=LN_EPS,
                batch_first=True,
                norm_first=True,
            )
            a = model.self_attn
            a.in_proj_weight.copy_(t(np.concatenate([p[n]["W"].T for n in "qkv"])))
            a.in_proj_bias.copy_(t(np.concatenate([p[n]["b"] for n in "qkv"])))
            a.out_proj.weight.copy_(t(p["o"]["W"].T))
            a.out_proj.bias.copy_(t(p["o"]["b"]))
            for layer, q in ((model.linear1, p["ff1"]), (model.linear2, p["ff2"])):
                layer.weight.copy_(t(q["W"].T))
                layer.bias.copy_(t(q["b"]))
            for norm, q in ((model.norm1, p["ln1"]), (model.norm2, p["ln2"])):
                norm.weight.copy_(t(q["g"]))
                norm.bias.copy_(t(q["b"]))
            forward = model
    model.train()
    n_params = sum(q.numel() for q in model.parameters())
    x, y = t(problem.x), t(problem.y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    cell: dict[str, Any] = {}

    def run(calls: int) -> None:
        torch.set_num_threads(threads)
        for _ in range(calls):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(forward(x), y)
            loss.backward()
            optimizer.step()
        cell["loss"] = loss.detach()

    name = f"PyTorch eager, {threads} thread{'s' if threads > 1 else ''}"
    return Impl(
        name,
        "peer",
        run,
        losses=lambda: np.atleast_1d(cell["loss"].double().numpy()),
        n_params=n_params,
    )


PEERS = [
    ("Flax Linen", ("flax", "optax"), build_flax_linen),
    ("Equinox", ("equinox", "optax"), build_equinox),
    ("PyTorch eager", ("torch",), build_torch),
    (
        "PyTorch eager, 1 thread",
        ("torch",),
        lambda problem, spec: build_torch(problem, spec, threads=1),
    ),
]


def build_all(problem: Problem, spec: Spec, *, scan: bool = True) -> list[Impl]:
    impls = [build_raw(problem, spec), build_fundl_row(problem, spec, scan=False)]
    for name, modules, builder in PEERS:
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            impls.append(skipped(name, "peer", "not installed"))
            continue
        impls.append(builder(problem, spec))
    if scan:
        impls += [build_raw_scan(problem, spec), build_fundl_row(problem, spec, scan=True)]
    return impls


# --- checks --------------------------------------------------------------------------


def check(impls: list[Impl], spec: Spec) -> tuple[str, list[str]]:
    """cnn_step.py's checks, allowing a stated parameter-count difference."""
    failures, rows = [], {}
    for impl in impls:
        if impl.run is None:
            continue
        impl.run(1)
        first, last = float(impl.losses()[0]), math.nan
        if impl.steps_per_call == 1:
            impl.run(CHECK_STEPS - 1)
            last = float(impl.losses()[-1])
        rows[impl.name] = (first, last)
    base_first, _ = rows["raw JAX"]
    base_params = impls[0].n_params
    lines = [
        f"### {spec.label}: checks",
        "",
        (
            f"Loss at step 1 and after {CHECK_STEPS} steps on the same batch; every row "
            f"with shared weights must have raw JAX's step-1 loss (within {LOSS_TOLERANCE:g})."
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
        if impl.n_params + impl.fewer_params != base_params:
            bad.append(f"{impl.n_params:,} parameters, raw JAX has {base_params:,}")
        if not math.isfinite(first):
            bad.append(f"loss {first}")
        elif not impl.own_init and abs(first - base_first) > LOSS_TOLERANCE:
            bad.append(f"step-1 loss {first:.6f} != raw JAX's {base_first:.6f}")
        if impl.steps_per_call == 1 and not last < first:
            bad.append(f"loss did not fall in {CHECK_STEPS} steps ({first:.6f} -> {last:.6f})")
        failures += [f"{spec.label}, {impl.name}: {b}" for b in bad]
        ok = "ok" + (" (own init)" if impl.own_init else "")
        if impl.fewer_params and not bad:
            ok += f" (one bias per gate: {impl.fewer_params:,} fewer)"
        cells = [f"{impl.n_params:,}", f"{first:.6f}", "—" if math.isnan(last) else f"{last:.6f}"]
        lines.append(f"| {impl.name} | " + " | ".join(cells) + f" | {'; '.join(bad) or ok} |")
    return "\n".join(lines), failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*SPECS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 rounds")
    parser.add_argument("--no-scan", action="store_true", help="leave out the scan-fused rows")
    parser.add_argument("--out", help="also write the Markdown report to this path")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    keys = list(SPECS) if args.model == "all" else [args.model]
    header = [
        "## fundl sequence-model train step benchmark",
        "",
        f"{time.strftime('%Y-%m-%d')}; {versions(PEER_MODULES)}",
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
        rates = measure(impls, rounds, warmup=0)
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
