"""The examples run and say what they should."""

import pathlib
import runpy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gradcheck_mlp_example(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "gradcheck_mlp.py"), run_name="example")
    assert module["main"]() == 0
    out = capsys.readouterr().out
    assert "1      (3, 2) = (n^[1], n^[0])  (3,)   (16, 3) = (m, n^[1])    relu" in out
    assert "3      (1, 3) = (n^[3], n^[2])  (1,)   (16, 1) = (m, n^[3])    sigmoid" in out
    assert "vjp: hand vs finite diff    params['dense3']['W']" in out
    assert "PASSED (33 checks)" in out
    assert "all gradients agree" in out
