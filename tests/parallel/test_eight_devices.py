"""Data parallelism on 8 forced host devices equals one device, on the same global batch.

The checks run in one subprocess (``eight_devices.py``: the device count is fixed when
JAX starts); each test here asserts one of them. Tolerance: 1e-5 relative, 1e-6
absolute — float32 sums over the batch run in another order on 8 devices.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from fundl.checkpoint import restore_params

ROOT = pathlib.Path(__file__).resolve().parents[2]


CHECKS = [
    "mlp_step_8_equals_1",  # 3 Adam steps of an MLP, params and opt state replicated
    "fsdp_step_8_equals_1",  # the same with shard_params=True: leaves split as param_specs says
    "batchnorm_step_8_equals_1",  # a stateful step with batch norm: running statistics too
    "batchnorm_statistics_are_global",  # the batch mean/variance over the global batch
    "scan_steps_8_equals_1",  # make_scan_steps
    "fit_8_equals_1",  # fit(mesh=...), validation batches of 8 and 2
    "fit_fsdp_checkpoint_equals_1",  # fit(mesh=..., shard_params=True, checkpoints=...)
    "fit_scan_8_equals_1",  # fit(mesh=..., scan=True)
    "replicate_copies_the_callers_array",  # a donating step leaves the caller's params alone
    "bad_inputs",  # batch not divisible, missing mesh axis, fit's final partial batch
]


def test_eight_devices_equal_one(tmp_path):
    """One subprocess runs every check (xdist would start a module fixture once per worker)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "parallel" / "eight_devices.py"), str(tmp_path)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == sorted(CHECKS)
    failed = {name: detail for name, (ok, detail) in results.items() if not ok}
    assert not failed, "\n\n".join(f"{name}:\n{detail}" for name, detail in failed.items())

    # the checkpoint the sharded fit wrote restores here, on one device, to its params
    expected = np.load(tmp_path / "params.npz")
    params = restore_params(tmp_path / "run", which="latest")
    for layer, leaves in params.items():
        for name, value in leaves.items():
            assert len(value.devices()) == 1
            np.testing.assert_array_equal(np.asarray(value), expected[f"{layer}/{name}"])
