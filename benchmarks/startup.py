"""Where the main example's time goes: start-up, each compiled function, host work.

Three measurements, each in a fresh Python process (this script starts them):

- ``example``: ``examples/cnn_digits.py``'s ``main()`` (30 epochs, no progress bar),
  instrumented: the time to import JAX, start its backend and import fundl; every
  function JAX compiles (from ``jax.monitoring``'s trace, lowering and backend-compile
  events, named as JAX names them: ``jit(train_step)`` is fit's step, ``jit(copy)`` or
  ``jit(broadcast_in_dim)`` an eager ``jax.numpy`` op dispatched op by op) with how
  many times and how long; the host work that is not compilation (data preparation,
  checkpoint saves, the curves' plot); and the rest (running the compiled steps, the
  Python loop, host syncs).
- ``mlp``: 40 epochs of the digits MLP (``examples/mlp_digits.py``'s model and data,
  batch 32, validation, no checkpoints) with ``fit``, called twice in one process, then
  with ``scan=True`` twice: the first call pays the compilations, the second shows the
  per-step and per-epoch cost alone.
- ``--wall N``: the wall time of ``python examples/cnn_digits.py`` (the README's first
  command, progress bar to a log file) in N fresh processes, and its median.

``--cache DIR`` runs everything with JAX's persistent compilation cache in DIR
(``fundl.enable_compilation_cache``): the first process fills it, the later ones read
it. ``--cache`` with a fresh DIR and ``--wall 3`` shows a cold then two warm runs.

Run:   python benchmarks/startup.py --wall 3
Cache: python benchmarks/startup.py --wall 3 --cache /tmp/fundl-jax-cache
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import ClassVar

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# --- inside the measured process --------------------------------------------------------


class CompileLog:
    """Trace, lowering and backend-compile time per function name, from jax.monitoring."""

    EVENTS: ClassVar[dict[str, str]] = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "compile",
    }

    def __init__(self) -> None:
        import jax

        self.rows: dict[str, dict[str, float]] = collections.defaultdict(
            lambda: {"count": 0, "trace": 0.0, "lower": 0.0, "compile": 0.0}
        )
        self.cache_hits = 0
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, seconds: float, fun_name: str = "?", **_: object) -> None:
        kind = self.EVENTS.get(event)
        if kind is None:
            return
        name = fun_name if fun_name.startswith("jit(") else f"jit({fun_name})"
        row = self.rows[name]
        row[kind] += seconds
        if kind == "lower":  # one lowering per compiled program (a cache hit skips "compile")
            row["count"] += 1

    def _on_event(self, event: str, **_: object) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in self.rows.items()}


def _diff(after: dict, before: dict) -> dict:
    out = {}
    for name, row in after.items():
        old = before.get(name, {"count": 0, "trace": 0.0, "lower": 0.0, "compile": 0.0})
        delta = {k: row[k] - old[k] for k in row}
        if delta["count"] or delta["trace"] > 1e-4:
            out[name] = delta
    return out


class Timer:
    """Time spent inside some functions (wrapped in place), less the compilations inside."""

    def __init__(self, log: CompileLog) -> None:
        self.log = log
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def _compiling(self) -> float:
        return sum(r["trace"] + r["lower"] + r["compile"] for r in self.log.rows.values())

    def wrap(self, owner: object, attr: str, label: str) -> None:
        fn = getattr(owner, attr)

        def timed(*args, **kwargs):
            started, compiling = time.perf_counter(), self._compiling()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started - (self._compiling() - compiling)
                self.seconds[label] += spent

        setattr(owner, attr, timed)


def _start_up() -> tuple[dict[str, float], CompileLog]:
    started = time.perf_counter()
    import jax

    imported = time.perf_counter()
    jax.devices()
    backend = time.perf_counter()
    import fundl

    fundl_imported = time.perf_counter()
    cache = os.environ.get("FUNDL_STARTUP_CACHE")
    if cache:
        fundl.enable_compilation_cache(cache)
    return {
        "import jax": imported - started,
        "backend start (jax.devices())": backend - imported,
        "import fundl": fundl_imported - backend,
    }, CompileLog()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_example() -> dict:
    """The main example, instrumented (run in a fresh process)."""
    phases, log = _start_up()
    sys.path.insert(0, str(EXAMPLES))
    import cnn_digits

    import fundl.plot
    from fundl import checkpoint

    timer = Timer(log)
    timer.wrap(cnn_digits, "digits", "data (load, upsample, split)")
    timer.wrap(checkpoint.CheckpointManager, "save", "checkpoint saves")
    timer.wrap(fundl.plot, "history", "curves plot (matplotlib)")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        accuracy = cnn_digits.main(out=out, progress=False)
        total = time.perf_counter() - started
    return {
        "phases": phases,
        "host": dict(timer.seconds),
        "main": total,
        "compiles": log.snapshot(),
        "cache_hits": log.cache_hits,
        "accuracy": accuracy,
        "cpu": _cpu_seconds(),
    }


def measure_mlp(epochs: int = 40) -> dict:
    """fit of the digits MLP, twice per-step then twice scan-fused (one fresh process)."""
    phases, log = _start_up()
    sys.path.insert(0, str(EXAMPLES))
    import jax
    import mlp_digits

    import fundl
    from fundl import losses, metrics, optim, train

    k_data, k_init, k_fit = jax.random.split(jax.random.key(0), 3)
    train_set, val, _ = mlp_digits.prepare(k_data)
    model = fundl.mlp([64, 128, 64, 10], "relu")
    params = model.init(k_init)

    def loss_fn(params, batch):
        logits = model.apply(params, batch["x"])
        loss = losses.softmax_cross_entropy(logits, batch["y"])
        return loss, {"accuracy": metrics.accuracy(logits, batch["y"])}

    runs = []
    for scan in (False, False, True, True):
        before = log.snapshot()
        started = time.perf_counter()
        result = train.fit(
            loss_fn,
            params,
            optim.adam(1e-3),
            train_set,
            epochs=epochs,
            batch_size=32,
            key=k_fit,
            val_data=val,
            has_aux=True,
            scan=scan,
            progress=False,
        )
        seconds = time.perf_counter() - started
        runs.append(
            {
                "scan": scan,
                "seconds": seconds,
                "compiles": _diff(log.snapshot(), before),
                "val_accuracy": result.history["val_accuracy"][-1],
            }
        )
    return {"phases": phases, "runs": runs}


# --- the report -------------------------------------------------------------------------


def _child(part: str, cache: str | None) -> dict:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    if cache:
        env["FUNDL_STARTUP_CACHE"] = cache
    out = subprocess.run(
        [sys.executable, __file__, "--child", part],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _group(name: str) -> str:
    """Which part of a run a compiled function belongs to."""
    parts = {
        "jit(train_step)": "fit: train step",
        "jit(epoch)": "fit: scan-fused epoch",
        "jit(eval_step)": "fit / example: eval step",
        "jit(_finite_leaves)": "fit: finite-parameter check",
        "jit(_initial_state)": "fit: optimizer init, key split",
        "jit(_order)": "fit: an epoch's order",
        "jit(init_with_state)": "model init (jitted)",
    }
    if name in parts:
        return parts[name]
    if name in ("jit(_normal)", "jit(_uniform)", "jit(_truncated_normal)"):
        return "model init: eager draws"
    if "threefry" in name or name == "jit(_shuffle)":
        return "random: key splits, permutations"
    return "eager jax.numpy ops (op by op)"


def _compile_table(compiles: dict) -> list[str]:
    lines = [
        (
            "| part | compiled functions (× compiles) | compiles | trace + lower (s) | "
            "backend compile (s) |"
        ),
        "|---|---|---:|---:|---:|",
    ]
    groups: dict[str, list] = collections.defaultdict(list)
    for name, row in compiles.items():
        if row["count"] or row["trace"] > 1e-3:
            groups[_group(name)].append((name, row))
    total = {"count": 0, "trace": 0.0, "lower": 0.0, "compile": 0.0}
    for group in sorted(groups, key=lambda g: -sum(r["compile"] for _, r in groups[g])):
        rows = sorted(groups[group], key=lambda nr: -nr[1]["compile"])
        g = {k: sum(r[k] for _, r in rows) for k in total}
        for k in total:
            total[k] += g[k]
        names = ", ".join(f"`{n}`×{int(r['count'])}" for n, r in rows[:8])
        names += f", … ({len(rows) - 8} more)" if len(rows) > 8 else ""
        lines.append(
            f"| {group} | {names} | {int(g['count'])} | {g['trace'] + g['lower']:.2f} | "
            f"{g['compile']:.2f} |"
        )
    lines.append(
        f"| **all** | | {int(total['count'])} | {total['trace'] + total['lower']:.2f} | "
        f"{total['compile']:.2f} |"
    )
    return lines


def report_example(result: dict) -> list[str]:
    compiles = result["compiles"]
    compile_s = sum(r["trace"] + r["lower"] + r["compile"] for r in compiles.values())
    host_s = sum(result["host"].values())
    lines = ["### `examples/cnn_digits.py` `main()`, one fresh process", ""]
    lines += ["| part | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in result["phases"].items()]
    lines.append(f"| `main()` in all | {result['main']:.2f} |")
    lines.append(f"| (the process's CPU time, user + sys, at the end) | {result['cpu']:.2f} |")
    lines.append(f"| — compilation (trace + lower + compile, below) | {compile_s:.2f} |")
    lines += [
        f"| — {k} (host, less compiles inside) | {v:.2f} |" for k, v in result["host"].items()
    ]
    rest = result["main"] - compile_s - host_s
    lines.append(f"| — the rest: running the compiled steps, the loop, host syncs | {rest:.2f} |")
    hits = result["cache_hits"]
    lines += ["", f"Test accuracy {result['accuracy']:.4f}; persistent-cache hits: {hits}.", ""]
    lines += _compile_table(compiles)
    return lines


def report_mlp(result: dict) -> list[str]:
    lines = [
        "### 40 epochs of the digits MLP with `fit`, twice each, one fresh process",
        "",
        "| call | seconds | compiles | compile (s) | compiled functions | val accuracy |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for i, run in enumerate(result["runs"]):
        comp = run["compiles"]
        n = int(sum(r["count"] for r in comp.values()))
        sec = sum(r["trace"] + r["lower"] + r["compile"] for r in comp.values())
        names = ", ".join(f"`{k}`×{int(r['count'])}" for k, r in comp.items() if r["count"])
        label = f"{'scan=True' if run['scan'] else 'per step'}, call {i % 2 + 1}"
        lines.append(
            f"| {label} | {run['seconds']:.2f} | {n} | {sec:.2f} | {names or '—'} | "
            f"{run['val_accuracy']:.4f} |"
        )
    return lines


def wall_times(n: int, cache: str | None) -> list[str]:
    """``time python examples/cnn_digits.py`` in n fresh processes."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    if cache:  # JAX reads its config from JAX_* environment variables too
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    times, cpu = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(n):
            started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            done = subprocess.run(
                [sys.executable, str(EXAMPLES / "cnn_digits.py"), "--out", out],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            times.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime)
            printed = [line for line in done.stdout.splitlines() if "accuracy" in line]
            print(
                f"  run {len(times)}: {times[-1]:.2f} s  {printed[-1] if printed else done.stderr[-300:]}",
                file=sys.stderr,
            )
    return [
        f"`python examples/cnn_digits.py`, {n} fresh processes: "
        + ", ".join(f"{t:.2f}" for t in times)
        + f" s; median **{statistics.median(times):.2f} s** wall; CPU time (user + sys) "
        + ", ".join(f"{t:.2f}" for t in cpu)
        + f" s, median **{statistics.median(cpu):.2f} s**"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["example", "mlp"], help=argparse.SUPPRESS)
    parser.add_argument("--wall", type=int, default=0, help="time the example in N processes")
    parser.add_argument("--cache", help="use JAX's persistent compilation cache in this folder")
    parser.add_argument("--only", choices=["example", "mlp", "wall"])
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_example() if args.child == "example" else measure_mlp()))
        return
    import jax

    lines = [f"JAX {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores"]
    lines.append(f"compilation cache: {args.cache or 'off'}")
    lines.append("")
    if args.only in (None, "example"):
        lines += report_example(_child("example", args.cache)) + [""]
    if args.only in (None, "mlp"):
        lines += report_mlp(_child("mlp", args.cache)) + [""]
    if args.wall and args.only in (None, "wall"):
        lines += wall_times(args.wall, args.cache)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
