"""The examples run and say what they should (at full scale: each takes seconds)."""

import gzip
import pathlib
import runpy
import struct
import warnings

import numpy as np
import pytest

from fundl import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each example trains for seconds


def _load(name):
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example")


@pytest.fixture(autouse=True)
def no_recompilation():
    with warnings.catch_warnings():
        warnings.simplefilter("error", train.RecompilationWarning)
        yield


def test_gradcheck_mlp_example(capsys):
    assert _load("gradcheck_mlp")["main"]() == 0
    out = capsys.readouterr().out
    assert "1      (3, 2) = (n^[1], n^[0])  (3,)   (16, 3) = (m, n^[1])    relu" in out
    assert "3      (1, 3) = (n^[3], n^[2])  (1,)   (16, 1) = (m, n^[3])    sigmoid" in out
    assert "vjp: hand vs finite diff    params['dense3']['W']" in out
    assert "PASSED (33 checks)" in out
    assert "all gradients agree" in out


def test_mlp_digits_reaches_97_percent(tmp_path, capsys):
    accuracy = _load("mlp_digits")["main"](out=str(tmp_path), progress=False)
    assert accuracy >= 0.97
    out = capsys.readouterr().out
    assert "test accuracy" in out and "wall time" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert list((tmp_path / "checkpoints").glob("step_*.safetensors"))


def test_custom_loop_reaches_97_percent():
    assert _load("custom_loop")["main"]() >= 0.97


def test_sweep_trains_eight_rates_at_once(capsys):
    results = _load("sweep_vmap")["main"](epochs=5)
    assert len(results) == 8
    assert max(results.values()) >= 0.95  # a good rate learns
    assert results[0.3] < 0.5  # a rate that is far too large does not


def test_batch_norm_and_dropout_train_the_digits_at_least_as_well():
    accuracy = _load("regularization")["main"]()
    # at least as well as without, within one test example (of 360) for platform rounding
    assert accuracy["batch norm + dropout"] >= accuracy["plain"] - 1 / 360
    assert accuracy["batch norm + dropout"] >= 0.97


def test_vanishing_gradients_tells_the_notes_story(tmp_path, capsys):
    results = _load("vanishing_gradients")["main"](out=str(tmp_path))
    sigmoid, relu, residual = (
        results[k] for k in ("sigmoid + Xavier", "ReLU + He", "residual + BN")
    )

    def first_over_last(norms):
        return norms[0] / norms[-1]

    def spread(norms):
        return max(norms) / min(norms)

    for when in ("init", "trained"):  # manual backprop at init; the monitor's last epoch
        assert len(sigmoid[when]) == len(relu[when]) == len(residual[when]) == 20
        assert first_over_last(sigmoid[when]) < 1e-9  # vanished: orders of magnitude
        assert spread(relu[when]) < 30 and spread(residual[when]) < 30  # within ~1.5 of them
        assert spread(sigmoid[when]) > 1e8 * max(spread(relu[when]), spread(residual[when]))
    # the monitor warned about the sigmoid network's first layers every epoch, and only there
    assert len(sigmoid["warnings"]) == 5
    assert all(w.rule == "vanish" and "dense1" in w.layers for w in sigmoid["warnings"])
    assert relu["warnings"] == [] and residual["warnings"] == []
    assert sigmoid["accuracy"] < 0.2 < relu["accuracy"] < residual["accuracy"]
    assert residual["accuracy"] >= 0.9
    out = capsys.readouterr().out
    assert "first/last" in out and "max/min" in out and "test acc." in out
    for name in ("init_profile", "sigmoid", "relu", "residual"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_sequence_memory_gated_cells_remember_where_the_rnn_vanishes(tmp_path, capsys):
    # the example's --quick run: the adding problem at T = 30, 10 epochs, seed 0
    results = _load("sequence_memory")["main"](30, 10, out=str(tmp_path))
    rnn, lstm, gru = (results[k] for k in ("RNN", "LSTM", "GRU"))

    def first_over_last(norms):
        return norms[0] / norms[-1]

    # the gated cells solve it (MSE ~1e-3 and below), the RNN stays at the baseline 1/6
    assert max(lstm["mse"], gru["mse"]) < 0.02 and rnn["mse"] > 0.15
    for r in (rnn, lstm, gru):
        assert len(r["init"]) == len(r["trained"]) == 30
    # at init the RNN's gradient to step 1 is orders of magnitude smaller than the LSTM's
    assert first_over_last(rnn["init"]) < 1e-3 * first_over_last(lstm["init"])
    # after training the gated cells' gradient reaches step 1 (~1 of the last step's);
    # the RNN's does not, and the monitor names its first steps and none of theirs
    assert first_over_last(lstm["trained"]) > 0.1 and first_over_last(gru["trained"]) > 0.1
    assert first_over_last(rnn["trained"]) < 1e-3
    assert rnn["vanished_init"][0] == 1 and rnn["vanished_trained"][0] == 1
    assert lstm["vanished_trained"] == [] and gru["vanished_trained"] == []
    out = capsys.readouterr().out
    assert "first/last" in out and "vanished" in out and "test MSE" in out
    assert (tmp_path / "gradients.png").stat().st_size > 10_000


def test_cnn_digits_reaches_98_percent(tmp_path, capsys):
    accuracy = _load("cnn_digits")["main"](out=str(tmp_path), progress=False)
    assert accuracy >= 0.98
    out = capsys.readouterr().out
    assert "test accuracy" in out and "wall time" in out
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert list((tmp_path / "checkpoints").glob("step_*.safetensors"))


def _write_idx(path, array):
    """An MNIST-format IDX file (ubyte), gzipped as the downloads are."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_cnn_digits_trains_on_mnist_files_unchanged(tmp_path, capsys):
    """The four MNIST files a user has, as MNIST names and formats them: here the 8×8
    digits blown up to 28×28 uint8 (nothing is downloaded)."""
    from fundl import data

    x, y = data.load_digits()
    images = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3)))  # 24×24
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))) * 255
    for prefix, part in (("train", slice(0, 1500)), ("t10k", slice(1500, None))):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[part])
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y[part])
    accuracy = _load("cnn_digits")["main"](
        epochs=2, out=str(tmp_path / "run"), progress=False, idx=str(tmp_path), limit=512
    )
    assert accuracy >= 0.5  # two epochs of 512 examples (0.80 seen): far above chance
    assert "test accuracy" in capsys.readouterr().out


def test_char_lm_learns_the_docs_with_both_models(capsys):
    # a small run: the first 20,000 characters (of README.md: the text changes with it), two
    # epochs (compiling dominates; one left the LSTM only 0.49 bits under uniform), small models
    argv = "--epochs 2 --chars 20000 --sample 20 --no-progress --d-model 32 --hidden 32"
    bits = _load("char_lm")["main"]([*argv.split(), "--layers", "1"])
    out = capsys.readouterr().out
    uniform = float(out.split("uniform guess ")[1].split()[0])
    assert uniform > 6  # about 100 distinct characters
    for name in ("Transformer", "LSTM"):
        assert bits[name] < uniform - 0.5, (name, bits[name], uniform)
    assert out.count("sample: ") == 2
