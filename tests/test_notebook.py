"""examples/colab_quickstart.ipynb: written by scripts/make_colab_notebook.py, and it runs.

Its code cells run here in order, in one namespace, with FUNDL_NOTEBOOK_QUICK=1 (a few
epochs), on the backend the tests run on (the CPU in CI); the install line (an IPython
``%pip`` magic) is the one line left out.
"""

import importlib.util
import json
import pathlib
import re

import jax
import matplotlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "colab_quickstart.ipynb"


def _generator():
    path = ROOT / "scripts" / "make_colab_notebook.py"
    spec = importlib.util.spec_from_file_location("make_colab_notebook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebook_is_what_the_script_writes():
    assert NOTEBOOK.read_text() == _generator().text(), "run python scripts/make_colab_notebook.py"


@pytest.mark.slow  # trains the MLP and the CNN: about 14 s of CPU
def test_the_code_cells_run(tmp_path, monkeypatch, capsys, f32_tol):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("FUNDL_NOTEBOOK_QUICK", "1")
    monkeypatch.chdir(tmp_path)
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    install = "".join(cells[0]["source"])
    assert install.startswith("# Install fundl") and '%pip install -q "fundl[examples] @' in install
    namespace: dict = {}
    for cell in cells[1:]:
        source = "".join(cell["source"])
        assert not any(line.startswith(("%", "!")) for line in source.splitlines())
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)  # noqa: S102
    plt.close("all")
    out = capsys.readouterr().out
    backend = jax.default_backend()
    assert f"backend {backend!r}" in out
    assert ("NO GPU OR TPU" in out) == (backend == "cpu")  # said loudly, and only then
    error = float(re.search(r"max relative difference (\S+)\n", out).group(1))
    if f32_tol()["rtol"] <= 1e-5:  # float32 products here (a CPU): "default" is "highest"
        assert error == 0.0
    else:  # TF32 or bfloat16 passes
        assert 0.0 < error < f32_tol()["rtol"]
    assert namespace["QUICK"] is True
    assert float(namespace["test_metrics"]["accuracy"]) > 0.85  # 2 epochs of the MLP
    assert float(namespace["cnn_test"]["accuracy"]) > 0.3  # 1 epoch of the CNN
    assert "PASSED" in out
    assert "1 device(s), batch 32 split as P" in out and "('data',): loss" in out
    assert list(tmp_path.iterdir()) == []  # nothing left behind
