"""Start N CPU processes on this machine that train one model together, data-parallel.

    python scripts/launch_local.py --processes 2 [--devices-per-process 1] [--out DIR]

Each process runs :func:`train` below: it joins the run with
``fundl.parallel.initialize`` (process 0 is the coordinator, on a free local port),
builds one mesh over the devices of every process, and calls ``fit(mesh=...)`` — the
same loss function as on one device. Every process holds the same data and key; each
sends only its own devices' slices of every batch; XLA's collectives (gloo on the CPU)
sum the gradients across the processes; process 0 writes the checkpoints to ``--out``.
Each process prints one JSON line with what it saw; process 0 also trains the same
model alone on one device to show the results agree. The launcher's exit status is non-zero
if any process fails.

On a cluster, run the worker part (``--rank``) once per host with that host's rank, the
coordinator's address and the process count instead (or leave them to JAX's cluster
detection).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys


def train(args: argparse.Namespace) -> dict:
    """One process of the run: join it, train data-parallel, report."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices_per_process}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    import fundl
    from fundl import losses, optim, parallel
    from fundl.checkpoint import CheckpointManager

    parallel.initialize(
        f"localhost:{args.port}", num_processes=args.processes, process_id=args.rank
    )
    mesh = parallel.data_mesh()  # every device of every process
    model = fundl.mlp([4, 16, 3], "relu")
    rng = np.random.default_rng(0)  # the same data in every process
    x = rng.normal(size=(117, 4)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    data = {"x": x[:96], "y": labels[:96]}
    val = {"x": x[96:], "y": labels[96:]}  # 21: batches of 16 (split) and 5 (whole on each)

    def loss_fn(params, batch):
        return losses.softmax_cross_entropy(model.apply(params, batch["x"]), batch["y"])

    def run(mesh, checkpoints):
        return fundl.train.fit(
            loss_fn,
            model.init(jax.random.key(1)),
            optim.adam(0.01),
            data,
            val_data=val,
            epochs=args.epochs,
            batch_size=16,
            key=0,
            progress=False,
            mesh=mesh,
            checkpoints=checkpoints,
        )

    checkpoints = None if args.out is None else CheckpointManager(args.out, keep_last=1)
    result = run(mesh, checkpoints)
    params = parallel.host_copy(result.params)
    report = {
        "process": parallel.process_index(),
        "processes": parallel.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "loss": result.history["loss"],
        "val_loss": result.history["val_loss"],
        "params_sum": float(sum(np.sum(p, dtype=np.float64) for p in jax.tree.leaves(params))),
    }
    if parallel.is_main_process():  # the same training on this process's first device alone
        alone = run(None, None)
        report["loss_alone"] = alone.history["loss"]
        report["val_loss_alone"] = alone.history["val_loss"]
        alone_params = parallel.host_copy(alone.params)
        report["params_max_diff_alone"] = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(alone_params))
        )
    return report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace) -> int:
    """Start the processes, wait for them, print their reports; 0 if all succeeded."""
    port = args.port or _free_port()
    base = [sys.executable, os.path.abspath(__file__), "--processes", str(args.processes)]
    base += ["--devices-per-process", str(args.devices_per_process), "--port", str(port)]
    base += ["--epochs", str(args.epochs)] + ([] if args.out is None else ["--out", args.out])
    procs = [
        subprocess.Popen(base + ["--rank", str(rank)], stdout=subprocess.PIPE, text=True)
        for rank in range(args.processes)
    ]
    status = 0
    for rank, proc in enumerate(procs):
        try:
            out, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            print(f"process {rank} timed out after {args.timeout} s", file=sys.stderr)
            return 1
        reports = [line for line in out.splitlines() if line.startswith("{")]
        print(reports[-1] if reports else f"process {rank}: no report", flush=True)
        status = status or proc.returncode or (0 if reports else 1)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices-per-process", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=None, help="checkpoint directory (process 0 writes)")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (default: free)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--rank", type=int, default=None, help="(worker) this process's index")
    args = parser.parse_args()
    if args.rank is None:
        return launch(args)
    print(json.dumps(train(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
