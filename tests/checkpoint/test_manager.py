"""fundl.checkpoint.manager: step checkpoints of a run, and restore_params.

Keeping the last k and the best (ranked by fundl.metrics.Monitor), the monitor recorded
in the files, partial and fall-back restores, a run's params from another process,
concurrent savers, stale temporary files, write errors and files of format version 1.
"""

import errno
import json
import math
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl.checkpoint import CheckpointError, CheckpointManager, restore_params
from fundl.checkpoint import format as container
from fundl.metrics import Monitor

DATA = pathlib.Path(__file__).resolve().parent / "data"


def _tree(step):
    return {"w": jnp.full((2,), float(step)), "step": step}


def _corrupt(path, tensor=None):
    """Flip a byte of ``tensor`` (default: the last data byte): its checksum no longer holds."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    if tensor is None:
        raw[-1] ^= 0xFF
    else:
        raw[start + json.loads(raw[8:start])[tensor]["data_offsets"][0]] ^= 0xFF
    path.write_bytes(bytes(raw))


# --- the last k and the best --------------------------------------------------------


def test_manager_keeps_the_last_k(tmp_path):
    manager = CheckpointManager(tmp_path / "run", keep_last=2)
    assert manager.steps() == [] and manager.latest_step() is None
    for step in [1, 2, 3, 4]:
        path = manager.save(step, _tree(step))
        assert path == tmp_path / "run" / f"step_{step:08d}.safetensors"
    assert manager.steps() == [3, 4] and manager.latest_step() == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "step_00000003.safetensors",
        "step_00000004.safetensors",
    ]
    chex.assert_trees_all_equal(
        manager.restore(), {"w": jnp.full((2,), 4.0), "step": jnp.asarray(4)}
    )
    chex.assert_trees_all_equal(manager.restore(3, _tree(0)), _tree(3))
    assert type(manager.restore(step=3, template=_tree(0))["step"]) is int


def test_manager_keeps_the_best_although_old(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2, monitor="loss")
    for step, loss in [(10, 0.5), (20, 0.1), (30, 0.4), (40, 0.3), (50, 0.2)]:
        manager.save(step, _tree(step), metrics={"loss": loss, "acc": 1 - loss})
    assert manager.steps() == [20, 40, 50]
    assert manager.best_step() == 20
    chex.assert_trees_all_equal(manager.restore_best(_tree(0)), _tree(20))
    assert manager.metrics(20) == {"loss": 0.1, "acc": 0.9}


def test_a_new_manager_reads_the_same_directory(tmp_path):
    first = CheckpointManager(tmp_path, keep_last=1, monitor="acc", mode="max")
    for step, acc in [(1, 0.7), (2, 0.9), (3, 0.8)]:
        first.save(step, _tree(step), metrics={"acc": acc}, metadata={"note": f"step {step}"})
    second = CheckpointManager(tmp_path, keep_last=1, monitor="acc", mode="max")
    assert second.steps() == [2, 3] and second.latest_step() == 3 and second.best_step() == 2
    assert second.read_metadata(2) == {"note": "step 2"}
    second.save(4, _tree(4), metrics={"acc": 0.95})
    assert second.steps() == [4] and second.best_step() == 4


def test_a_step_below_the_latest_warns(tmp_path):
    # A new run in an old run's directory: its steps rank below the old ones, so
    # restore_latest gives the old run's step and pruning deletes the new run's files.
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in [10, 11]:
        manager.save(step, _tree(step))
    with pytest.warns(
        UserWarning,
        match=r"^CheckpointManager\.save: step 0 is below the latest step 11 in .*: "
        r"latest_step\(\) and restore_latest\(\) give step 11",
    ):
        manager.save(0, _tree(0))
    assert manager.steps() == [0, 10, 11] and manager.latest_step() == 11
    with pytest.warns(UserWarning, match=r"step 1 is below the latest step 11"):
        manager.save(1, _tree(1))
    assert manager.steps() == [1, 10, 11]  # step 0 went: the highest 2 and the last saved stay
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager.save(11, _tree(11))  # the latest step again: overwritten, no warning
        manager.save(12, _tree(12))
    assert manager.steps() == [11, 12]


@pytest.mark.parametrize("mode, best", [("min", 1), ("max", 3)])
def test_manager_modes(tmp_path, mode, best):
    manager = CheckpointManager(tmp_path, keep_last=5, monitor="m", mode=mode)
    for step, m in [(1, -1.0), (2, 0.0), (3, 2.0), (4, 2.0), (5, -1.0)]:
        manager.save(step, _tree(step), metrics={"m": m})
    assert manager.best_step() == best  # ties go to the earlier step


def test_the_best_step_is_monitors_best(tmp_path):
    """One rule for "best so far": the manager ranks exactly as fundl.metrics.Monitor does."""
    values = [0.5, float("nan"), 0.25, 0.25, float("inf"), 0.1, float("nan"), 0.1, -0.0, 0.0]
    for mode in ("min", "max"):
        manager = CheckpointManager(tmp_path / mode, keep_last=len(values), monitor="v", mode=mode)
        for step, v in enumerate(values):
            manager.save(step, _tree(step), metrics={"v": v})
        assert manager.best_step() == Monitor("v", mode).best(enumerate(values))[0]


def test_nan_never_becomes_the_best(tmp_path, read_header):
    manager = CheckpointManager(tmp_path, keep_last=1, monitor="loss")
    manager.save(1, _tree(1), metrics={"loss": float("nan")})
    assert manager.best_step() is None
    manager.save(2, _tree(2), metrics={"loss": jnp.float32(2.0)})
    manager.save(3, _tree(3), metrics={"loss": np.nan})
    manager.save(4, _tree(4), metrics={"loss": float("inf")})
    assert manager.best_step() == 2 and manager.steps() == [2, 4]
    assert math.isinf(manager.metrics(4)["loss"])
    manifest = json.loads(read_header(manager.path(4))["__metadata__"]["fundl"])
    assert manifest["metrics"] == {"loss": "inf"} and manifest["step"] == 4  # strict JSON
    assert manifest["monitor"] == "loss" and manifest["mode"] == "min"


# --- the monitor recorded in the files ----------------------------------------------


def test_a_manager_without_monitor_uses_the_one_its_files_record(tmp_path):
    writer = CheckpointManager(tmp_path, keep_last=1, monitor="acc", mode="max")
    for step, acc in [(1, 0.7), (2, 0.9), (3, 0.8)]:
        writer.save(step, _tree(step), metrics={"acc": acc})
    reader = CheckpointManager(tmp_path, keep_last=1)
    assert reader.best_step() == 2  # "acc", mode "max", as recorded
    chex.assert_trees_all_equal(reader.restore_best(_tree(0)), _tree(2))
    reader.save(4, _tree(4), metrics={"acc": 0.5})  # pruning keeps the best by "acc"
    assert reader.steps() == [2, 4]
    reader.save(5, _tree(5), metrics={"acc": 0.95})  # the new best: step 2 goes
    assert reader.steps() == [5]
    assert reader.best_step() == 5  # the files it saved record the monitor they inherited
    assert reader.monitor is None and reader.metrics(5) == {"acc": 0.95}


def test_without_any_monitor_best_step_says_what_to_do(tmp_path):
    manager = CheckpointManager(tmp_path / "m", keep_last=1)
    message = (
        r"no monitor; build the manager with monitor='<metric name>' \(and mode='min' or "
        r"'max'\): it was built without one and no checkpoint in .*m records one"
    )
    with pytest.raises(ValueError, match=rf"^CheckpointManager\.best_step: {message}$"):
        manager.best_step()
    manager.save(1, _tree(1), metrics={"loss": 0.1})
    manager.save(2, _tree(2), metrics={"loss": 0.05})
    manager.save(3, _tree(3), metrics={"loss": 0.2})  # pruning works, protecting nothing
    assert manager.steps() == [3]
    with pytest.raises(ValueError, match=rf"^CheckpointManager\.best_step: {message}$"):
        manager.best_step()
    with pytest.raises(ValueError, match=rf"^CheckpointManager\.restore_best: {message}$"):
        manager.restore_best()


def test_the_monitor_must_be_in_the_metrics(tmp_path):
    CheckpointManager(tmp_path / "m", keep_last=1).save(1, _tree(1), metrics={"loss": 0.1})
    monitored = CheckpointManager(tmp_path / "m", monitor="val_loss")
    with pytest.raises(
        FileNotFoundError, match=r"restore_best: no checkpoint in .* has the metric 'val_loss'"
    ):
        monitored.restore_best()
    with pytest.raises(
        ValueError,
        match=r"CheckpointManager\.save: metrics has no 'val_loss' \(the monitor\); got \['loss'\]",
    ):
        monitored.save(2, _tree(2), metrics={"loss": 0.1})
    monitored.save(2, _tree(2))  # saving without metrics is fine
    assert monitored.steps() == [1, 2]


# --- restoring ----------------------------------------------------------------------


def _bundle(params, step):
    """What fundl.train.fit saves each epoch."""
    return {
        "params": jax.tree.map(lambda p: p + step, params),
        "opt_state": {"mu": jax.tree.map(jnp.zeros_like, params)},
        "key": jax.random.key(step),
        "step": step * 5,
        "epoch": step,
        "position": 0,
    }


def test_partial_restores_from_the_manager(tmp_path, params):
    manager = CheckpointManager(tmp_path, keep_last=3, monitor="val_loss")
    for epoch, loss in [(1, 0.5), (2, 0.2), (3, 0.4)]:
        manager.save(epoch, _bundle(params, epoch), metrics={"val_loss": loss})
    best = manager.restore_best({"params": params}, partial=True)
    chex.assert_trees_all_equal(best, {"params": _bundle(params, 2)["params"]})
    latest = manager.restore(template={"params": params, "epoch": 0}, partial=True)
    assert latest["epoch"] == 3
    with pytest.raises(
        ValueError, match=r"the checkpoint has \['epoch'\] but the template does not"
    ):
        manager.restore(template={"params": params})
    with pytest.raises(
        ValueError, match=r"^CheckpointManager\.restore_best: partial=True needs a template"
    ):
        manager.restore_best(partial=True)


def test_restore_latest_falls_back_past_a_corrupt_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in [1, 2, 3]:
        manager.save(step, _tree(step))
    step, tree = manager.restore_latest(_tree(0))
    assert step == 3
    chex.assert_trees_all_equal(tree, _tree(3))
    _corrupt(manager.path(3))
    manager.path(2).write_bytes(manager.path(2).read_bytes()[:-3])  # truncated
    with pytest.warns(UserWarning) as caught:
        step, tree = manager.restore_latest(_tree(0))
    assert step == 1
    chex.assert_trees_all_equal(tree, _tree(1))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert re.fullmatch(
        r"CheckpointManager\.restore_latest: .*step_00000003\.safetensors: tensor 'w' \(\['w'\]\) "
        r"fails its checksum .*; falling back to step 2",
        messages[0],
    )
    assert re.fullmatch(
        r"CheckpointManager\.restore_latest: .*step_00000002\.safetensors: data shorter than the "
        r"offsets say.*; falling back to step 1",
        messages[1],
    )
    _corrupt(manager.path(1))
    with (
        pytest.warns(UserWarning) as caught,
        pytest.raises(
            CheckpointError,
            match=r"^CheckpointManager\.restore_latest: no checkpoint in .* can be read; the "
            r"newest: .*step_00000003\.safetensors: tensor 'w'",
        ),
    ):
        manager.restore_latest()
    assert len(caught) == 3 and str(caught[-1].message).endswith("; no older step is left")


def test_restore_latest_errors(tmp_path):
    manager = CheckpointManager(tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match=r"^CheckpointManager\.restore_latest: no checkpoints in .*empty$"
    ):
        manager.restore_latest()
    manager.save(1, _tree(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a template that does not fit is not a corrupt file
        with pytest.raises(
            ValueError, match=r"\['w'\] has shape \(2,\), the template expects \(3,\)"
        ):
            manager.restore_latest({"w": jnp.zeros(3), "step": 0})


def test_manager_restore_errors(tmp_path):
    manager = CheckpointManager(tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match=r"CheckpointManager\.restore: no checkpoints in .*empty"
    ):
        manager.restore()
    manager.save(5, _tree(5))
    with pytest.raises(
        FileNotFoundError,
        match=r"CheckpointManager\.restore: no checkpoint for step 6 in .*; steps: \[5\]",
    ):
        manager.restore(6)
    with pytest.raises(
        FileNotFoundError, match=r"CheckpointManager\.read_metadata: no checkpoint for step 1"
    ):
        manager.read_metadata(1)


# --- a run's params in another process ----------------------------------------------


@pytest.fixture
def run_dir(tmp_path, params):
    """A directory laid out as fundl.train.fit writes it (val_loss best at epoch 2)."""
    manager = CheckpointManager(tmp_path / "run", keep_last=2, monitor="val_loss")
    history = {"loss": [], "val_loss": []}
    for epoch, (loss, val_loss) in enumerate([(0.9, 0.8), (0.5, 0.3), (0.4, 0.35), (0.3, 0.4)], 1):
        history["loss"].append(loss)
        history["val_loss"].append(val_loss)
        manager.save(
            epoch * 5,
            _bundle(params, epoch),
            metrics={"epoch": epoch, "loss": loss, "val_loss": val_loss},
            metadata={"history": history, "best": 0.3, "best_epoch": 2, "wait": epoch - 2},
        )
    assert manager.steps() == [10, 15, 20]
    return tmp_path / "run"


def test_restore_params_of_a_fit_run(run_dir, params):
    best = restore_params(run_dir)
    chex.assert_trees_all_equal(best, _bundle(params, 2)["params"])
    assert isinstance(best["dense1"]["W"], jax.Array)
    latest = restore_params(str(run_dir), which="latest", template=jax.eval_shape(lambda: params))
    chex.assert_trees_all_equal(latest, _bundle(params, 4)["params"])
    # Only the params are read: the rest of the newest file may be corrupt.
    newest = CheckpointManager(run_dir).path(20)
    _corrupt(newest, "opt_state/mu/dense1/W")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chex.assert_trees_all_equal(restore_params(run_dir, which="latest"), latest)
    _corrupt(newest, "params/dense1/b")
    with pytest.warns(
        UserWarning,
        match=r"^restore_params: .*step_00000020\.safetensors: tensor "
        r"'params/dense1/b' .* fails its checksum .*; falling back to step 15$",
    ):
        chex.assert_trees_all_equal(
            restore_params(run_dir, which="latest"), _bundle(params, 3)["params"]
        )


def test_restore_params_errors(tmp_path, run_dir, params):
    with pytest.raises(
        ValueError, match=r"^restore_params: which must be one of 'best', 'latest'; got 'last'$"
    ):
        restore_params(run_dir, which="last")
    with pytest.raises(FileNotFoundError, match=r"^restore_params: no checkpoints in .*nowhere$"):
        restore_params(tmp_path / "nowhere")
    with pytest.raises(
        ValueError,
        match=r"restore_params: .*: the template has \['params'\]\['dense3'\]\['W'\] but the "
        r"checkpoint does not",
    ):
        restore_params(run_dir, template={**params, "dense3": {"W": jnp.ones(1)}})
    plain = CheckpointManager(tmp_path / "plain")
    plain.save(1, {"weights": jnp.ones(2)})
    with pytest.raises(
        ValueError,
        match=r"^restore_params: .*step_00000001\.safetensors: the saved tree holds no 'params' "
        r"entry at its top level \(it holds \['weights'\]\)$",
    ):
        restore_params(tmp_path / "plain", which="latest")
    with pytest.raises(
        ValueError,
        match=r"^restore_params: no checkpoint in .*plain records a monitor to rank by; pass "
        r"which='latest'$",
    ):
        restore_params(tmp_path / "plain")


# --- concurrency --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*is below the latest step")
def test_two_savers_can_share_a_directory(tmp_path):
    errors = []

    def saver(first):
        manager = CheckpointManager(tmp_path, keep_last=2, monitor="loss")
        try:
            for step in range(first, 100, 2):
                tree = {"w": np.full(64, step, np.float32)}
                manager.save(step, tree, metrics={"loss": (step * 37 % 11) / 11})
                manager.best_step()
                manager.restore_latest()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=saver, args=(first,)) for first in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    manager = CheckpointManager(tmp_path, monitor="loss")
    assert manager.latest_step() in (98, 99)
    for step in manager.steps():  # whatever is left is whole
        assert manager.restore(step)["w"][0] == step
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# --- temporary files and write errors -----------------------------------------------


def test_opening_and_saving_remove_stale_temporary_files(tmp_path):
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    dead, me = process.pid, os.getpid()
    stale = f".step_00000009.safetensors.{host}.{dead}.0123abcd.tmp"
    old = ".step_00000010.safetensors.elsewhere.1.11111111.tmp"
    live = f".step_00000011.safetensors.{host}.{me}.89abcdef.tmp"
    others = [f".notes.txt.{host}.{dead}.22222222.tmp", "notes.txt"]
    for name in [stale, old, live, *others]:
        (tmp_path / name).write_bytes(b"partial")
    then = time.time() - 7200
    os.utime(tmp_path / old, (then, then))
    manager = CheckpointManager(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, *others])
    (tmp_path / stale).write_bytes(b"partial")  # another killed save, while the manager is open
    manager.save(3, _tree(3))
    assert manager.steps() == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live, *others, "step_00000003.safetensors"]
    )


def test_a_full_disk_names_the_method_and_the_file(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(1, _tree(1))

    def full(f, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(container, "_write_chunk", full)
    with pytest.raises(
        OSError,
        match=r"^\[Errno 28\] CheckpointManager\.save: cannot write the checkpoint "
        r".*step_00000002\.safetensors: No space left on device$",
    ) as info:
        manager.save(2, _tree(2))
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.safetensors"]


# --- files and directories that are not as expected ---------------------------------


def test_manager_ignores_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".step_00000009.safetensors.ab12.tmp").write_bytes(b"partial")
    manager = CheckpointManager(tmp_path)
    manager.save(3, _tree(3))
    assert manager.steps() == [3]
    assert manager.path(123456789).name == "step_123456789.safetensors"


def test_an_unreadable_step_is_skipped_with_a_warning_when_ranking(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=5, monitor="loss")
    for step, loss in [(1, 0.3), (2, 0.1), (3, 0.2)]:
        manager.save(step, _tree(step), metrics={"loss": loss})
    manager.path(2).write_bytes(b"garbage!")
    with pytest.warns(
        UserWarning,
        match=r"CheckpointManager\.best_step: skipped step 2: .*step_00000002\.safetensors: header "
        r"length",
    ):
        assert manager.best_step() == 3


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"metrics": [1]}, r"the manifest's metrics are \[1\], not an object"),
        ({"metrics": {"loss": "low"}}, r"the manifest's metric 'loss' is 'low', not a number"),
        ({"metrics": {"loss": True}}, r"the manifest's metric 'loss' is True, not a number"),
        ({"monitor": 3}, r"the manifest's monitor 3 and mode 'min' are not a metric name"),
        ({"mode": "best"}, r"the manifest's monitor 'loss' and mode 'best' are not"),
    ],
)
def test_malformed_manager_fields_raise_checkpoint_error(
    tmp_path, rewrite_manifest, fields, message
):
    manager = CheckpointManager(tmp_path, monitor="loss")
    manager.save(1, _tree(1), metrics={"loss": 0.5})
    rewrite_manifest(manager.path(1), lambda m: m.update(fields))
    with pytest.raises(CheckpointError, match=rf"^CheckpointManager\.metrics: .*: {message}"):
        manager.metrics(1)


def test_a_run_of_format_version_1_still_works(tmp_path):
    shutil.copytree(DATA / "v1_run", tmp_path / "run")
    manager = CheckpointManager(tmp_path / "run", monitor="loss")
    assert manager.steps() == [1, 2] and manager.best_step() == 1
    assert manager.metrics(2) == {"loss": 0.7} and manager.read_metadata(1) == {"note": "step 1"}
    np.testing.assert_array_equal(
        restore_params(tmp_path / "run", which="latest")["W"], [[0, 2], [4, 6]]
    )
    with pytest.raises(ValueError, match=r"no checkpoint in .*run records one"):
        CheckpointManager(tmp_path / "run").best_step()  # version 1 recorded no monitor
    step, _ = manager.restore_latest()
    assert step == 2


# --- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"keep_last": 0},
            ValueError,
            r"^CheckpointManager: keep_last must be a positive integer, got 0$",
        ),
        ({"keep_last": 2.5}, ValueError, r"keep_last must be a positive integer, got 2\.5"),
        ({"keep_last": True}, ValueError, r"keep_last must be a positive integer, got True"),
        (
            {"mode": "best"},
            ValueError,
            r"^CheckpointManager: mode must be one of 'min', 'max'; got 'best'$",
        ),
        (
            {"monitor": 3},
            TypeError,
            r"^CheckpointManager: monitor must be a metric name \(str\) or None, got 3$",
        ),
        (
            {"monitor": ""},
            ValueError,
            r"^CheckpointManager: monitor must be a metric name, got the empty string$",
        ),
    ],
)
def test_manager_validates_its_options(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path, **kwargs)


def test_manager_validates_its_directory(tmp_path):
    with pytest.raises(
        TypeError, match=r"^CheckpointManager: directory must be a str or os\.PathLike, got None$"
    ):
        CheckpointManager(None)
    # A file where the run directory should be read as an empty run, and saving said
    # "File exists".
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(
        NotADirectoryError, match=r"CheckpointManager: .*run is a file, not a directory"
    ):
        CheckpointManager(tmp_path / "run")
    with pytest.raises(NotADirectoryError, match=r"restore_params: .*run is a file, not a"):
        restore_params(str(tmp_path / "run"))


def test_a_relative_directory_stays_where_it_was(tmp_path, monkeypatch):
    # The directory is made absolute when the manager is built: an os.chdir later (a
    # notebook's %cd) must not make the run's checkpoints vanish.
    monkeypatch.chdir(tmp_path)
    manager = CheckpointManager("run", keep_last=2)
    manager.save(1, _tree(1))
    assert manager.directory == tmp_path / "run"
    monkeypatch.chdir(tmp_path / "run")
    assert manager.steps() == [1] and manager.latest_step() == 1
    manager.save(2, _tree(2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "step_00000001.safetensors",
        "step_00000002.safetensors",
    ]


@pytest.mark.parametrize(
    "step, metrics, error, message",
    [
        (
            -1,
            None,
            ValueError,
            r"^CheckpointManager\.save: step must be a non-negative integer, got -1$",
        ),
        (1.5, None, ValueError, r"step must be a non-negative integer, got 1\.5"),
        (True, None, ValueError, r"step must be a non-negative integer, got True"),
        (
            1,
            {"loss": "low"},
            TypeError,
            r"^CheckpointManager\.save: metrics\['loss'\] must be a number, got 'low'$",
        ),
        (
            1,
            {"loss": "0.5"},  # float() would read the string as a number
            TypeError,
            r"^CheckpointManager\.save: metrics\['loss'\] must be a number, got '0\.5'$",
        ),
        (1, {0: 1.0}, TypeError, r"^CheckpointManager\.save: metric names must be str, got 0$"),
        (
            1,
            [("loss", 1.0)],
            TypeError,
            r"^CheckpointManager\.save: metrics must be a dict of \{name: number\}, got list$",
        ),
    ],
)
def test_manager_save_validates(tmp_path, step, metrics, error, message):
    with pytest.raises(error, match=message):
        CheckpointManager(tmp_path).save(step, _tree(1), metrics=metrics)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda m: m.restore(-2),
            r"^CheckpointManager\.restore: step must be a non-negative integer, got -2$",
        ),
        (
            lambda m: m.metrics("1"),
            r"^CheckpointManager\.metrics: step must be a non-negative integer, got '1'$",
        ),
        (
            lambda m: m.read_metadata(1.0),
            r"^CheckpointManager\.read_metadata: step must be a non-negative",
        ),
        (
            lambda m: m.path(-1),
            r"^CheckpointManager\.path: step must be a non-negative integer, got -1$",
        ),
        (
            lambda m: m.restore(partial="yes"),
            r"^CheckpointManager\.restore: partial must be True or False",
        ),
        (
            lambda m: m.restore_latest(partial=1),
            r"^CheckpointManager\.restore_latest: partial must be",
        ),
    ],
)
def test_manager_methods_validate_steps(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(CheckpointManager(tmp_path))


def test_manager_accepts_integer_array_steps(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(jnp.int32(12), _tree(12))
    manager.save(np.int64(13), _tree(13))
    assert manager.steps() == [12, 13]
    assert re.fullmatch(
        r"CheckpointManager\('.*', keep_last=3, monitor=None, mode='min'\)", repr(manager)
    )
