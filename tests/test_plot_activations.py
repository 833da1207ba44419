"""docs/plot_activations.py (the activations page's figure) runs and writes a PNG."""

import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_plot_activations_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location(
        "plot_activations", ROOT / "docs" / "plot_activations.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.main(tmp_path / "activations.png")
    assert out == tmp_path / "activations.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activations.png"]
    # the committed figure is small enough for the site and the repository
    assert (ROOT / "docs" / "concepts" / "activations.png").stat().st_size < 150_000
