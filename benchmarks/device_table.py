"""A device table: steps/s of the MLP, the CNN and the transformer block in float32 and
bfloat16, as a fraction of the device's measured matmul peak, against raw JAX and peers.

One command, bounded in time, for a session that has an accelerator for a few minutes::

    python benchmarks/device_table.py --out benchmarks/results_device.md

What it does, in order:

1. The device's matmul peak: a square matmul ``a @ b`` (n = 8192 on an accelerator, 1024
   on the CPU) in float32 at JAX's default precision (TF32-class on a GPU), float32 at
   ``precision="highest"``, and bfloat16; TFLOP/s = 2n³ / seconds, the median of repeats.
2. For each model × dtype (float32, bfloat16), the candidates, interleaved round after
   round with train_step.py's ``measure`` (ratios paired within a round):

   - raw JAX: the model in ``jax.numpy`` / ``lax`` (the forwards of train_step.py,
     cnn_step.py and sequence_step.py), JAX autodiff, train_step.py's hand-written Adam
     with the new params cast back to their dtype (in bfloat16 the moments are bfloat16
     too: the floor a library can reach), ``jax.jit`` donating the carry;
   - fundl: ``fundl.train.make_train_step`` with ``fundl.optim.adam`` (its default keeps
     float32 moments for bfloat16 params), and in bfloat16 also
     ``adam(..., moment_dtype="param")`` (moments in bfloat16), which separates the
     cost of the wider moments;
   - the peers (Flax Linen, Flax NNX, Equinox, PyTorch), built by the same builders as
     in train_step.py / cnn_step.py / sequence_step.py, in float32 only (those builders
     are float32), PyTorch only on the CPU (its builders are CPU ones).

   The models, sized by the device (``--sizes`` overrides):

   ======== ================================================ ==========================
   model    accelerator                                      CPU
   ======== ================================================ ==========================
   MLP      4096-4096-4096-10, batch 1024                     512-512-512-10, batch 128
   CNN      ResNet-20 of cnn_step.py, batch 128 of 32×32×3    LeNet of cnn_step.py, 64
   block    pre-LN encoder block, batch 32 × 1024, d 1024,    batch 4 × 128, d 256,
            16 heads, FFN 4096                                4 heads, FFN 1024
   ======== ================================================ ==========================

3. Model FLOPs per step: analytic for the MLP (6 · Σ n_in·n_out · batch: forward 2, the
   two backward products 4) and the block (6 · B·L · (4d² + 2·d·FFN) + 12 · B·L²·d for
   the attention products); XLA's cost analysis of the raw JAX step
   (``jax.jit(step).lower(...).cost_analysis()["flops"]``) for the CNN, shown for all.
   Achieved TFLOP/s = FLOPs/step × steps/s; % of peak against the peak in that dtype
   (float32 rows against float32 at default precision).

Checks (a failed one is marked in the table and the exit status is 1): each row's loss
finite after its warm-up steps; the params of raw JAX and fundl still in the row's dtype
after the steps; the dtypes of the inputs of every matrix product and convolution in
the traced step (the table's "matmul in" column) are the row's dtype, so a bfloat16 row
that silently computes in float32 cannot pass.

Bounded in time: groups run MLP, block, CNN; a group is skipped once ``--budget-s`` is
spent (default 300 s), and ``--quick`` is 2 rounds, no peers and fewer peak repeats.

Run:   python benchmarks/device_table.py --out benchmarks/results_device.md
CPU:   python benchmarks/device_table.py --out benchmarks/results_device_cpu.md
Smoke: python benchmarks/device_table.py --quick --sizes tiny
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cnn_step
import sequence_step
import train_step
from train_step import LEARNING_RATE, measure, paired, raw_adam_init, raw_adam_update, spread

import fundl

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# --- sizes ---------------------------------------------------------------------------


class Sizes(NamedTuple):
    mlp: train_step.Size
    cnn: cnn_step.Spec
    block: sequence_step.Spec
    peak_n: int


def block_spec(batch: int, length: int, d: int, heads: int, ffn: int) -> sequence_step.Spec:
    label = (
        f"Transformer encoder block (pre-LN), batch {batch} × {length} tokens, d {d}, "
        f"{heads} heads, FFN {ffn}"
    )
    return sequence_step.Spec("transformer", label, batch, length, d, ffn, heads, 1)


SIZES = {
    "device": Sizes(
        train_step.Size("device", (4096, 4096, 4096, 10), 1024),
        cnn_step.SPECS["resnet20"]._replace(scan_steps=1),
        block_spec(32, 1024, 1024, 16, 4096),
        8192,
    ),
    "cpu": Sizes(
        train_step.Size("cpu", (512, 512, 512, 10), 128),
        cnn_step.SPECS["lenet"]._replace(scan_steps=1),
        block_spec(4, 128, 256, 4, 1024),
        1024,
    ),
    "tiny": Sizes(
        train_step.Size("tiny", (64, 64, 10), 32),
        cnn_step.SPECS["lenet"]._replace(
            label="LeNet-style CNN, batch 8 of 28×28×1", batch=8, scan_steps=1
        ),
        block_spec(2, 32, 64, 4, 128),
        256,
    ),
}


# --- the matmul peak -----------------------------------------------------------------


def matmul_peak(n: int, repeats: int) -> list[tuple[str, float, list[float]]]:
    """(label, median TFLOP/s, the repeats' TFLOP/s) of an n×n matmul in three settings."""
    rows = []
    settings = [
        ("float32, default precision", jnp.float32, None),
        ('float32, precision="highest"', jnp.float32, jax.lax.Precision.HIGHEST),
        ("bfloat16", jnp.bfloat16, None),
    ]
    key_a, key_b = jax.random.split(jax.random.key(0))
    for label, dtype, precision in settings:
        a = jax.random.normal(key_a, (n, n), dtype)
        b = jax.random.normal(key_b, (n, n), dtype)
        f = jax.jit(functools.partial(jnp.matmul, precision=precision))
        jax.block_until_ready(f(a, b))
        # calls per repeat: about 0.1 s
        start = time.perf_counter()
        jax.block_until_ready(f(a, b))
        one = time.perf_counter() - start
        calls = max(1, min(200, round(0.1 / max(one, 1e-6))))
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = [f(a, b) for _ in range(calls)]
            jax.block_until_ready(out)
            rates.append(2 * n**3 * calls / (time.perf_counter() - start) / 1e12)
        rows.append((label, statistics.median(rates), rates))
    return rows


# --- rows: what measure() reads, plus the checks -------------------------------------


class Row(NamedTuple):
    name: str
    role: str  # "raw", "fundl" or "peer"
    run: Callable[[int], None] | None
    steps_per_call: int = 1
    note: str = ""
    losses: Callable[[], np.ndarray] | None = None
    params: Callable[[], Any] | None = None  # the current params (dtype check)
    matmul_dtypes: str = ""  # the dtypes of the matmul/conv inputs in the traced step


def walk_matmuls(jaxpr: Any, found: set[str]) -> None:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            found.add(str(eqn.invars[0].aval.dtype))
            found.add(str(eqn.invars[1].aval.dtype))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    walk_matmuls(sub, found)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    walk_matmuls(sub.jaxpr, found)


def matmul_dtypes(step: Callable[..., Any], *args: Any) -> str:
    found: set[str] = set()
    walk_matmuls(jax.make_jaxpr(step)(*args).jaxpr, found)
    return ", ".join(sorted(found)) or "none"


def carry_row(name: str, role: str, step: Callable[..., Any], carry: Any, *batch: Any) -> Row:
    """A row for ``step(carry, *batch) -> (carry, loss)``, with params = carry[0]."""
    dtypes = matmul_dtypes(step, carry, *batch)
    cell = {"carry": carry, "loss": None}

    def run(calls: int) -> None:
        carry = cell["carry"]
        for _ in range(calls):
            carry, loss = step(carry, *batch)
        jax.block_until_ready((carry, loss))
        cell["carry"], cell["loss"] = carry, loss

    def params():
        carry = cell["carry"]
        return carry.params if hasattr(carry, "params") else carry[0]

    losses = lambda: np.atleast_1d(np.asarray(cell["loss"], np.float64))
    return Row(name, role, run, losses=losses, params=params, matmul_dtypes=dtypes)


def cast(tree: Any, dtype: Any) -> Any:
    """Floating leaves in ``dtype`` (fresh device buffers); others as they are."""

    def leaf(x):
        x = jnp.array(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(leaf, tree)


# --- raw JAX -------------------------------------------------------------------------


def raw_step(loss_fn: Callable[..., Any]) -> Callable[..., Any]:
    """((params, opt_state, state), x, y) -> (carry, loss): autodiff, train_step's Adam,
    the new params cast back to their dtype (a no-op in float32)."""

    def step(carry, x, y):
        params, opt_state, state = carry
        (value, state), grads = jax.value_and_grad(lambda p: loss_fn(p, state, x, y), has_aux=True)(
            params
        )
        new, opt_state = raw_adam_update(params, opt_state, grads)
        new = jax.tree.map(lambda n, p: n.astype(p.dtype), new, params)
        return (new, opt_state, state), value

    return jax.jit(step, donate_argnums=0)


def raw_mlp_loss(params, state, x, y):
    return train_step.raw_loss(params, x, y), state


def raw_cnn_loss(spec: cnn_step.Spec) -> Callable[..., Any]:
    forward = cnn_step.raw_forward(spec)

    def loss(params, state, x, y):
        logits, state = forward(params, state, x)
        return cnn_step.cross_entropy(logits, y), state

    return loss


def raw_block(p, x, heads):
    """sequence_step.raw_block with the score scale in x's dtype (its ``jnp.float32``
    scale would lift a bfloat16 block to float32 from the scores on)."""
    B, L, d = x.shape
    dh = d // heads

    def proj(name, z):
        return z @ p[name]["W"] + p[name]["b"]

    h = sequence_step.layer_norm(x, p["ln1"])
    q, k, v = (proj(n, h).reshape(B, L, heads, dh) for n in "qkv")
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (1 / math.sqrt(dh))
    a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v).reshape(B, L, d)
    x = x + proj("o", a)
    h = jax.nn.gelu(proj("ff1", sequence_step.layer_norm(x, p["ln2"])), approximate=False)
    return x + proj("ff2", h)


def raw_block_loss(spec: sequence_step.Spec) -> Callable[..., Any]:
    def loss(params, state, x, y):
        return sequence_step.mse(raw_block(params, x, spec.heads), y), state

    return loss


def build_raw(loss_fn, params, state, batch, dtype) -> Row:
    params = cast(params, dtype)
    carry = (params, raw_adam_init(params), cast(state, dtype))
    return carry_row("raw JAX", "raw", raw_step(loss_fn), carry, *cast(batch, dtype))


# --- fundl ---------------------------------------------------------------------------


def build_fundl(name, loss_fn, params, model_state, batch, dtype, optimizer) -> Row:
    """``make_train_step`` (stateful with a ``TrainState`` when the model has state)."""
    params, batch = cast(params, dtype), cast(batch, dtype)
    # fresh buffers: each row donates its own (the model state stays in fundl's dtypes)
    model_state = jax.tree.map(lambda x: x.copy(), model_state)
    if jax.tree.leaves(model_state):
        compiled = fundl.train.make_train_step(loss_fn, optimizer, stateful=True)
        carry = fundl.train.TrainState.create(params, optimizer, model_state=model_state, key=1)

        def step(train_state, batch):
            train_state, metrics = compiled(train_state, batch)
            return train_state, metrics["loss"]

    else:
        compiled = fundl.train.make_train_step(loss_fn, optimizer)
        carry = (params, optimizer.init(params))

        def step(carry, batch):
            params, opt_state, metrics = compiled(*carry, batch)
            return (params, opt_state), metrics["loss"]

    return carry_row(name, "fundl", step, carry, batch)


def fundl_rows(loss_fn, params, model_state, batch, dtype) -> list[Row]:
    rows = [
        build_fundl(
            "fundl", loss_fn, params, model_state, batch, dtype, fundl.optim.adam(LEARNING_RATE)
        )
    ]
    if dtype != jnp.float32:
        optimizer = fundl.optim.adam(LEARNING_RATE, moment_dtype="param")
        name = 'fundl, adam(moment_dtype="param")'
        rows.append(build_fundl(name, loss_fn, params, model_state, batch, dtype, optimizer))
    return rows


# --- the three models ----------------------------------------------------------------


class Group(NamedTuple):
    model: str  # "MLP", "CNN" or "block"
    label: str
    dtype: str
    rows: list[Any]
    flops: float  # model FLOPs per step
    flops_source: str
    xla_flops: float  # XLA's cost analysis of the raw JAX step


def xla_flops(row_step: Callable[..., Any], *args: Any) -> float:
    lowered = jax.jit(row_step).lower(*args)
    for analyse in (lowered.cost_analysis, lambda: lowered.compile().cost_analysis()):
        try:
            analysis = analyse()
            if isinstance(analysis, (list, tuple)):
                analysis = analysis[0]
            return float(analysis["flops"])
        except Exception as error:  # noqa: BLE001 — no cost analysis here: the next, or n/a
            print(f"cost analysis: {type(error).__name__}: {error}", file=sys.stderr)
    return float("nan")


def peer_rows(peers, problem, size, dtype: str, with_peers: bool) -> list[Any]:
    if not with_peers:
        return []
    if dtype != "float32":
        names = ", ".join(name for name, _, _ in peers)
        return [Row(f"peers ({names})", "peer", None, note="float32 builders only")]
    rows = []
    for name, modules, builder in peers:
        if "torch" in modules and jax.default_backend() != "cpu":
            rows.append(Row(name, "peer", None, note="CPU builder; not run here"))
            continue
        try:
            for module in modules:
                __import__(module)
        except ImportError:
            rows.append(Row(name, "peer", None, note="not installed"))
            continue
        try:
            rows.append(builder(problem, size))
        except Exception as error:  # noqa: BLE001 — a peer's failure is a row, not the end
            rows.append(Row(name, "peer", None, note=f"error: {type(error).__name__}: {error}"))
    return rows


def mlp_group(size: train_step.Size, dtype: str, with_peers: bool) -> Group:
    d = DTYPES[dtype]
    rng = np.random.default_rng(0)
    params = fundl.mlp(list(size.sizes), "relu").init(jax.random.key(0))
    layers = [
        (np.asarray(params[f"dense{i}"]["W"]), np.asarray(params[f"dense{i}"]["b"]))
        for i in range(1, len(size.sizes))
    ]
    x = rng.standard_normal((size.batch, size.sizes[0]), dtype=np.float32)
    y = rng.integers(0, size.sizes[-1], size.batch).astype(np.int32)
    problem = train_step.Problem(layers, x, y, x[None], y[None])
    shared = train_step.device_params(problem)
    model = fundl.mlp(list(size.sizes), "relu")
    rows = [build_raw(raw_mlp_loss, shared, {}, (x, y), d)]
    rows += fundl_rows(train_step.fundl_loss(model), shared, {}, (x, y), d)
    peers = [p for p in train_step.PEERS if p[0] != "PyTorch eager, 1 thread"]
    rows += peer_rows(peers, problem, size, dtype, with_peers)
    dense = sum(a * b for a, b in zip(size.sizes[:-1], size.sizes[1:]))
    carry = (cast(shared, d), raw_adam_init(cast(shared, d)), {})
    xla = xla_flops(raw_step(raw_mlp_loss), carry, *cast((x, y), d))
    return Group("MLP", size.label, dtype, rows, 6 * dense * size.batch, "analytic", xla)


def cnn_group(spec: cnn_step.Spec, dtype: str, with_peers: bool) -> Group:
    d = DTYPES[dtype]
    problem = cnn_step.make_problem(spec)
    loss = raw_cnn_loss(spec)
    batch = (problem.x, problem.y)
    rows = [build_raw(loss, problem.params, problem.state, batch, d)]
    model = cnn_step.fundl_model(spec)
    params, model_state = model.init_with_state(jax.random.key(0), spec.image)
    fundl_loss = (
        cnn_step.fundl_stateful_loss(model)
        if jax.tree.leaves(model_state)
        else cnn_step.fundl_plain_loss(model)
    )
    rows += fundl_rows(fundl_loss, params, model_state, batch, d)
    peers = [p for p in cnn_step.PEERS if p[0] != "PyTorch eager, channels_last"]
    rows += peer_rows(peers, problem, spec, dtype, with_peers)
    params = cast(problem.params, d)
    carry = (params, raw_adam_init(params), cast(problem.state, d))
    xla = xla_flops(raw_step(loss), carry, *cast(batch, d))
    return Group("CNN", spec.label, dtype, rows, xla, "XLA cost analysis", xla)


def block_group(spec: sequence_step.Spec, dtype: str, with_peers: bool) -> Group:
    d = DTYPES[dtype]
    problem = sequence_step.make_problem(spec)
    loss = raw_block_loss(spec)
    batch = (problem.x, problem.y)
    rows = [build_raw(loss, problem.params, {}, batch, d)]
    layer = sequence_step.fundl_layer(spec)
    params = layer.init(jax.random.key(0), (spec.length, spec.width))

    def fundl_loss(params, batch):
        x, y = batch
        return sequence_step.mse(layer.apply(params, x), y)

    rows += fundl_rows(fundl_loss, params, {}, batch, d)
    peers = [p for p in sequence_step.PEERS if p[0] != "PyTorch eager, 1 thread"]
    rows += peer_rows(peers, problem, spec, dtype, with_peers)
    B, L, w, f = spec.batch, spec.length, spec.width, spec.hidden
    analytic = 6 * B * L * (4 * w * w + 2 * w * f) + 12 * B * L * L * w
    params = cast(problem.params, d)
    xla = xla_flops(raw_step(loss), (params, raw_adam_init(params), {}), *cast(batch, d))
    return Group("block", spec.label, dtype, rows, analytic, "analytic", xla)


# --- checks and report ---------------------------------------------------------------


def check(group: Group, warmup: int) -> dict[str, str]:
    """Run each row ``warmup`` times (this compiles it); each row's check verdict."""
    verdicts = {}
    for row in group.rows:
        if row.run is None:
            continue
        problems = []
        try:
            row.run(warmup)
        except Exception as error:  # noqa: BLE001 — reported in the table
            verdicts[row.name] = f"FAILED: {type(error).__name__}: {str(error)[:200]}"
            continue
        losses, params = getattr(row, "losses", None), getattr(row, "params", None)
        if losses is not None and not np.all(np.isfinite(losses())):
            problems.append(f"loss {losses()}")
        if params is not None:
            kinds = {str(p.dtype) for p in jax.tree.leaves(params())}
            if kinds != {group.dtype}:
                problems.append(f"params in {sorted(kinds)}")
        traced = getattr(row, "matmul_dtypes", "")
        if traced and traced != group.dtype:
            problems.append(f"matmul inputs in {traced}")
        verdicts[row.name] = "FAILED: " + "; ".join(problems) if problems else "ok"
    return verdicts


def fmt_spread(values: list[float]) -> str:
    noise = spread(values)
    return f"{noise:.1%}" if math.isfinite(noise) else "n/a (< 4 rounds)"


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def group_table(group: Group, rates, verdicts, peaks: dict[str, float]) -> list[str]:
    peak = peaks["float32" if group.dtype == "float32" else "bfloat16"]
    xla = f"{group.xla_flops / 1e9:,.3g}" if math.isfinite(group.xla_flops) else "n/a"
    lines = [
        f"### {group.label}, {group.dtype}",
        "",
        (
            f"Model FLOPs per step: {group.flops / 1e9:,.3g} GFLOP ({group.flops_source}); "
            f"XLA's cost analysis of the raw JAX step: {xla} GFLOP. Peak: {peak:,.3g} TFLOP/s "
            f"({group.dtype} matmul{', default precision' if group.dtype == 'float32' else ''})."
        ),
        "",
        (
            "| train step | steps/s | ms/step | TFLOP/s | % of peak | ÷ raw JAX | fundl ÷ row "
            "| spread | matmul in | check |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in group.rows:
        if row.name not in rates:
            note = row.note or verdicts.get(row.name, "")
            lines.append(f"| {row.name} | {note} | | | | | | | | |")
            continue
        median = statistics.median(rates[row.name])
        tflops = group.flops * median / 1e12
        cells = [
            fmt_rate(median),
            f"{1e3 / median:,.3g}",
            f"{tflops:,.3g}",
            f"{tflops / peak:.1%}",
            f"{paired(rates, row.name, 'raw JAX'):.3f}" if "raw JAX" in rates else "n/a",
            f"{paired(rates, 'fundl', row.name):.3f}" if "fundl" in rates else "n/a",
            fmt_spread(rates[row.name]),
            getattr(row, "matmul_dtypes", "") or "(not traced)",
            verdicts.get(row.name, ""),
        ]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def device_name() -> str:
    device = jax.devices()[0]
    return f"{device.platform}: {device.device_kind} ({jax.device_count()} device(s))"


def versions() -> str:
    found = [f"jax {jax.__version__}"]
    try:
        found.append(f"jaxlib {importlib.metadata.version('jaxlib')}")
    except importlib.metadata.PackageNotFoundError:
        pass
    for module in ("flax", "equinox", "optax", "torch"):
        try:
            found.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            found.append(f"{module} not installed")
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{', '.join(found)}; python {platform.python_version()}; {os.cpu_count()} CPU cores ({cpu})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the Markdown report here (and print it)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5; quick 2)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="skip groups after this")
    parser.add_argument("--quick", action="store_true", help="2 rounds, no peers, short peak")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--sizes", choices=sorted(SIZES), help="default: by the device")
    parser.add_argument("--models", default="mlp,block,cnn", help="comma-separated subset")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    start = time.perf_counter()
    sizes = SIZES[args.sizes or ("cpu" if jax.default_backend() == "cpu" else "device")]
    rounds = args.rounds or (2 if args.quick else 5)
    with_peers = not (args.quick or args.no_peers)

    peak_rows = matmul_peak(sizes.peak_n, 3 if args.quick else 7)
    peaks = {"float32": peak_rows[0][1], "bfloat16": peak_rows[2][1]}
    print(f"peak done at {time.perf_counter() - start:.1f} s", file=sys.stderr)

    builders = {
        "mlp": lambda dt: mlp_group(sizes.mlp, dt, with_peers),
        "block": lambda dt: block_group(sizes.block, dt, with_peers),
        "cnn": lambda dt: cnn_group(sizes.cnn, dt, with_peers),
    }
    sections: dict[tuple[str, str], list[str]] = {}
    summary: list[str] = []
    failed = False
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            elapsed = time.perf_counter() - start
            if elapsed > args.budget_s:
                sections[model, dtype] = [
                    f"### {model}, {dtype}",
                    "",
                    f"Skipped: the budget ({args.budget_s:.0f} s) was spent ({elapsed:.0f} s).",
                ]
                continue
            group = builders[model](dtype)
            verdicts = check(group, warmup=3)
            failed |= any(v.startswith("FAILED") for v in verdicts.values())
            timed = [r for r in group.rows if r.run is not None and verdicts.get(r.name) == "ok"]
            rates = measure(timed, rounds, warmup=0) if timed else {}
            sections[model, dtype] = group_table(group, rates, verdicts, peaks)
            if "raw JAX" in rates:
                raw = statistics.median(rates["raw JAX"])
                cells = [group.model, dtype, fmt_rate(raw)]
                cells.append(f"{group.flops * raw / 1e12 / peaks[dtype]:.1%}")
                for name in ("fundl", 'fundl, adam(moment_dtype="param")'):
                    ratio = paired(rates, name, "raw JAX") if name in rates else None
                    cells.append(f"{ratio:.3f}" if ratio else "")
                best = [r.name for r in group.rows if r.role == "peer" and r.name in rates]
                if best and "fundl" in rates:
                    fastest = max(best, key=lambda n: statistics.median(rates[n]))
                    cells.append(f"{fastest}: {paired(rates, 'fundl', fastest):.3f}")
                else:
                    cells.append("")
                summary.append("| " + " | ".join(cells) + " |")
            print(
                f"{model} {dtype} done at {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
            group = timed = None  # free the group's buffers before the next one

    total = time.perf_counter() - start
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    report = [
        "## Device table",
        "",
        f"- Device: {device_name()}",
        f"- Versions: {versions()}",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}` ({total:.0f} s; {rounds} interleaved rounds)",
        "",
        f"### Matmul peak ({sizes.peak_n}×{sizes.peak_n}, median of repeats)",
        "",
        "| matmul | TFLOP/s | spread |",
        "|---|---:|---:|",
        *[f"| {label} | {rate:,.3g} | {fmt_spread(r)} |" for label, rate, r in peak_rows],
        "",
        "### Summary",
        "",
        (
            "Ratios: steps/s ÷ raw JAX's in the same round, median over the rounds (> 1 is "
            "faster); the last column: fundl ÷ the fastest peer."
        ),
        "",
        (
            "| model | dtype | raw JAX steps/s | raw JAX % of peak | fundl ÷ raw | fundl "
            '(moment_dtype="param") ÷ raw | fundl ÷ fastest peer |'
        ),
        "|---|---|---:|---:|---:|---:|---|",
        *summary,
        "",
        (
            "Columns below: TFLOP/s = model FLOPs per step × steps/s; % of peak against the "
            "measured matmul peak in the row's dtype; fundl ÷ row: fundl's steps/s ÷ the "
            "row's in the same round; spread: interquartile range ÷ median of the row's "
            "steps/s; matmul in: the input dtypes of every matrix product and convolution in "
            "the traced step; check: finite loss, params still in the dtype, matmuls in the "
            "dtype."
        ),
    ]
    for lines in sections.values():
        report += ["", *lines]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if failed:
        print("a check FAILED (see the table)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
