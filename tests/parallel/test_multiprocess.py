"""Two CPU processes train one model together (``scripts/launch_local.py``): both see
both devices, agree on every loss, match one device training alone (to float32
reduction order), and process 0 alone writes the checkpoint."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from fundl.checkpoint import restore_params

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _gloo_available() -> bool:
    try:
        jax.config.jax_cpu_collectives_implementation  # noqa: B018 - the option exists
    except AttributeError:
        return False
    return True


@pytest.mark.skipif(
    not _gloo_available(),
    reason="this JAX has no jax_cpu_collectives_implementation option: no gloo collectives "
    "for several CPU processes",
)
def test_two_processes_train_together(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "launch_local.py"), "--processes", "2"]
        + ["--out", str(out), "--timeout", "300"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["process"] for r in reports] == [0, 1]
    assert all(
        r["processes"] == 2 and r["devices"] == 2 and r["local_devices"] == 1 for r in reports
    )
    assert reports[0]["loss"] == reports[1]["loss"]
    assert reports[0]["val_loss"] == reports[1]["val_loss"]
    alone = reports[0]  # process 0 trained the same model on one device too
    np.testing.assert_allclose(alone["loss"], alone["loss_alone"], rtol=1e-5)
    np.testing.assert_allclose(alone["val_loss"], alone["val_loss_alone"], rtol=1e-5)
    assert alone["params_max_diff_alone"] < 1e-5
    assert [p.name for p in out.iterdir()] == ["step_00000012.safetensors"]  # 2 epochs x 6
    params = restore_params(out, which="latest")
    total = sum(float(np.sum(np.asarray(p), dtype=np.float64)) for p in jax.tree.leaves(params))
    assert total == pytest.approx(reports[0]["params_sum"], rel=1e-12)
