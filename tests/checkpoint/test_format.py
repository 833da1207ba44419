"""fundl.checkpoint.format: the safetensors container on disk.

What the reference reader sees, dtypes bit for bit, checksums, atomic writes, stale
temporary files, write errors, and crafted headers.
"""

import errno
import json
import os
import pathlib
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from fundl import checkpoint
from fundl.checkpoint import CheckpointError
from fundl.checkpoint import format as container

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = pathlib.Path(__file__).resolve().parent / "data"


# --- what the reference reader sees -------------------------------------------------


def test_params_are_readable_by_safetensors_numpy_by_name(tmp_path, params):
    path = checkpoint.save(tmp_path / "model", params)
    assert path == tmp_path / "model.safetensors"
    loaded = safetensors.numpy.load_file(path)
    assert sorted(loaded) == ["dense1/W", "dense1/b", "dense2/W", "dense2/b"]
    assert loaded["dense1/W"].shape == (4, 2)  # (n_out, n_in), as torch.nn.Linear.weight
    np.testing.assert_array_equal(loaded["dense2/W"], params["dense2"]["W"])
    np.testing.assert_array_equal(loaded["dense1/b"], params["dense1"]["b"])


def test_manifest_sits_in_the_safetensors_metadata(tmp_path, read_header):
    tree = {"w": jnp.ones((2, 3), jnp.bfloat16), "key": jax.random.key(1), "n": None}
    path = checkpoint.save(tmp_path / "m.safetensors", tree, metadata={"lr": 0.1})
    with safe_open(path, framework="np") as f:  # safetensors' own reader accepts the header
        manifest = json.loads(f.metadata()["fundl"])
        assert sorted(f.keys()) == ["key", "w"]
    assert manifest["format"] == "fundl.checkpoint" and manifest["version"] == 2
    assert manifest["metadata"] == {"lr": 0.1}
    w_bytes = np.asarray(tree["w"]).view(np.uint8).tobytes()
    assert manifest["leaves"]["w"] == {
        "path": "['w']",
        "dtype": "bfloat16",
        "shape": [2, 3],
        "crc32": zlib.crc32(w_bytes),
    }
    key_entry = dict(manifest["leaves"]["key"])
    assert isinstance(key_entry.pop("crc32"), int)
    assert key_entry == {
        "path": "['key']",
        "dtype": "key<fry>",
        "shape": [],
        "key_impl": "threefry2x32",
    }
    assert manifest["tree"]["keys"] == ["key", "n", "w"]
    assert manifest["tree"]["children"][1] == {"type": "none"}
    header = read_header(path)
    assert header["w"]["dtype"] == "BF16" and header["key"] == {
        "dtype": "U32",
        "shape": [2],
        "data_offsets": [0, 8],
    }
    assert struct.unpack("<Q", path.read_bytes()[:8])[0] % 8 == 0  # data starts 8-byte aligned


def test_the_reference_reader_opens_f32_int_and_bf16(tmp_path):
    tree = {
        "f": np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        "i": np.arange(-3, 3, dtype=np.int32),
        "u": np.arange(4, dtype=np.uint8),
        "b": np.array([0.5, -2.0, 3.25], ml_dtypes.bfloat16),
    }
    path = checkpoint.save(tmp_path / "r", tree)
    with safe_open(path, framework="np") as f:
        for name in ("f", "i", "u"):
            got = f.get_tensor(name)
            assert got.dtype == tree[name].dtype
            np.testing.assert_array_equal(got, tree[name])
        bf16 = f.get_slice("b")
        assert bf16.get_dtype() == "BF16" and bf16.get_shape() == [3]
        try:  # safetensors 0.8's numpy reader builds bfloat16 through ml_dtypes; older ones cannot
            got = f.get_tensor("b")
        except Exception:  # noqa: BLE001 - the reader's own limitation, not fundl's file
            got = None
    if got is not None:
        np.testing.assert_array_equal(np.asarray(got).view(np.uint16), tree["b"].view(np.uint16))


def test_safetensors_is_only_a_test_dependency():
    sources = sorted((ROOT / "fundl").rglob("*.py"))
    assert sources
    importing = [
        str(p.relative_to(ROOT))
        for p in sources
        if re.search(r"^\s*(import|from)\s+safetensors\b", p.read_text(), flags=re.MULTILINE)
    ]
    assert importing == []
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("safetensors") for d in project["dependencies"])
    assert any(d.startswith("safetensors") for d in project["optional-dependencies"]["dev"])


# --- dtypes -------------------------------------------------------------------------

_DTYPES = [
    np.float32,
    np.float16,
    ml_dtypes.bfloat16,
    np.int32,
    np.uint32,
    np.int16,
    np.uint16,
    np.int8,
    np.uint8,
    np.bool_,
    ml_dtypes.float8_e4m3fn,
    ml_dtypes.float8_e5m2,
    np.complex64,
]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: np.dtype(d).name)
def test_dtypes_round_trip_exactly(tmp_path, dtype):
    values = np.array([[0.0, 1.0, -2.5], [3.25, 7.0, 1e-3]]).astype(dtype)
    tree = {"x": jnp.asarray(values), "y": values}
    path = checkpoint.save(tmp_path / "d", tree)
    restored = checkpoint.restore(path)
    assert restored["x"].dtype == np.dtype(dtype) and isinstance(restored["x"], jax.Array)
    np.testing.assert_array_equal(np.asarray(restored["x"]), values)
    with_template = checkpoint.restore(path, tree)
    assert isinstance(with_template["y"], np.ndarray)
    assert with_template["y"].dtype == np.dtype(dtype)
    chex.assert_trees_all_equal(with_template, tree)


def test_bfloat16_bits_are_kept(tmp_path):
    x = jax.random.normal(jax.random.key(2), (5, 7), jnp.bfloat16)
    restored = checkpoint.restore(checkpoint.save(tmp_path / "bf", {"x": x}))["x"]
    np.testing.assert_array_equal(
        np.asarray(restored).view(np.uint16), np.asarray(x).view(np.uint16)
    )


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint64])
def test_64_bit_leaves_round_trip(x64, tmp_path, dtype):
    values = np.array([0.1, 2.0**40, 3.0]).astype(dtype)
    path = checkpoint.save(tmp_path / "d", {"x": values})
    restored = checkpoint.restore(path, {"x": np.zeros(3, dtype)})["x"]
    assert restored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(restored, values)
    with x64():
        as_jax = checkpoint.restore(path)["x"]
        assert as_jax.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(as_jax), values)


def test_suffix_is_added_and_parents_are_created(tmp_path):
    path = checkpoint.save(tmp_path / "a" / "b" / "ckpt.v2", {"x": jnp.ones(2)})
    assert path == tmp_path / "a" / "b" / "ckpt.v2.safetensors" and path.is_file()
    chex.assert_trees_all_equal(
        checkpoint.restore(tmp_path / "a" / "b" / "ckpt.v2"), {"x": jnp.ones(2)}
    )
    assert checkpoint.save(str(path), {"x": jnp.ones(2)}) == path


# --- checksums ----------------------------------------------------------------------


def _data_start(path):
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_every_flipped_data_byte_is_detected(tmp_path):
    tree = {
        "w": jnp.arange(8.0),
        "b": jnp.ones(3, jnp.bfloat16),
        "flags": np.array([True, False]),
        "n": 7,
        "key": jax.random.key(0),
    }
    path = checkpoint.save(tmp_path / "c", tree)
    raw, start = path.read_bytes(), _data_start(path)
    assert len(raw) - start == 32 + 8 + 8 + 6 + 2
    for i in range(start, len(raw)):
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1 :])
        with pytest.raises(CheckpointError, match=r"fails its checksum .*: the file is corrupt"):
            checkpoint.restore(path)
    path.write_bytes(raw)
    chex.assert_trees_all_equal(checkpoint.restore(path, tree), tree)


def test_every_flipped_header_byte_is_detected_or_harmless(tmp_path):
    tree = {"w": jnp.arange(4.0), "opt": (jnp.ones(2, jnp.bfloat16), None), "n": 7}
    path = checkpoint.save(tmp_path / "h", tree, metadata={"lr": 0.5})
    raw, start = path.read_bytes(), _data_start(path)
    restored = 0
    for i in range(start):
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :])
        try:
            got, metadata = checkpoint.restore(path), checkpoint.read_metadata(path)
        except CheckpointError:
            continue
        restored += 1  # a change JSON ignores, such as in the padding after the header
        chex.assert_trees_all_equal(got, {**tree, "n": jnp.asarray(7)})
        assert metadata == {"lr": 0.5}
    assert restored < 10


def test_a_checksum_error_names_the_file_and_the_key_path(tmp_path):
    path = checkpoint.save(tmp_path / "c", {"params": {"W": jnp.ones((2, 2))}, "step": 3})
    raw = bytearray(path.read_bytes())
    raw[_data_start(path)] ^= 0xFF  # the first tensor's first byte: the widest dtype, int64
    path.write_bytes(bytes(raw))
    with pytest.raises(
        CheckpointError,
        match=r"restore: .*c\.safetensors: tensor 'step' \(\['step'\]\) fails its checksum "
        r"\(crc32 0x[0-9a-f]{8}, the manifest says 0x[0-9a-f]{8}\): the file is corrupt",
    ):
        checkpoint.restore(path)
    # A partial restore reads, and so verifies, only the tensors it needs.
    params = checkpoint.restore(path, {"params": {"W": jnp.zeros((2, 2))}}, partial=True)
    chex.assert_trees_all_equal(params, {"params": {"W": jnp.ones((2, 2))}})
    assert checkpoint.read_metadata(path) == {}  # the header alone is intact


def test_files_of_format_version_1_still_restore(tmp_path):
    path = tmp_path / "old.safetensors"
    shutil.copy(DATA / "v1_run" / "step_00000002.safetensors", path)
    manifest = json.loads(safe_open(path, framework="np").metadata()["fundl"])
    assert manifest["version"] == 1 and "crc32" not in manifest["leaves"]["params/W"]
    restored = checkpoint.restore(path)
    np.testing.assert_array_equal(restored["params"]["W"], np.arange(4.0).reshape(2, 2) * 2)
    assert restored["params"]["b"].dtype == jnp.bfloat16 and restored["opt_state"] is None
    assert jax.random.key_impl(restored["key"]) == "threefry2x32" and int(restored["step"]) == 2
    assert checkpoint.read_metadata(path) == {"note": "step 2"}


# --- atomic writes ------------------------------------------------------------------


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, params):
    path = checkpoint.save(tmp_path / "ckpt", params, metadata={"version": "old"})
    before = path.read_bytes()
    calls = []

    def write_half_then_fail(f, data):
        calls.append(len(data))
        if len(calls) == 3:
            f.write(bytes(memoryview(data))[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(data)

    monkeypatch.setattr(container, "_write_chunk", write_half_then_fail)
    bigger = jax.tree.map(lambda p: jnp.ones(p.shape, p.dtype), params)
    with pytest.raises(OSError, match="No space left on device"):
        checkpoint.save(tmp_path / "ckpt", bigger, metadata={"version": "new"})
    assert len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]  # no temporary file left
    assert path.read_bytes() == before
    chex.assert_trees_all_equal(checkpoint.restore(path, params), params)
    assert checkpoint.read_metadata(path) == {"version": "old"}


def test_an_interrupted_save_cleans_up(tmp_path, monkeypatch):
    def interrupted(f, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(container, "_write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "ckpt", {"x": jnp.ones(2)})
    assert list(tmp_path.iterdir()) == []


def test_saved_files_get_ordinary_permissions(tmp_path):
    path = checkpoint.save(tmp_path / "perm", {"x": jnp.ones(1)})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    "where, code",
    [("write", errno.ENOSPC), ("fsync", errno.EIO), ("replace", errno.EACCES)],
)
def test_write_errors_keep_their_errno_and_name_the_path(tmp_path, monkeypatch, where, code):
    path = checkpoint.save(tmp_path / "ckpt", {"x": jnp.zeros(2)})
    before = path.read_bytes()

    def fail(*args):
        raise OSError(code, os.strerror(code))

    target = {"write": (container, "_write_chunk"), "fsync": (os, "fsync")}.get(
        where, (os, "replace")
    )
    monkeypatch.setattr(*target, fail)
    with pytest.raises(OSError) as info:
        checkpoint.save(tmp_path / "ckpt", {"x": jnp.ones(2)})
    monkeypatch.undo()
    assert info.value.errno == code
    assert re.fullmatch(
        rf"\[Errno {code}\] save: cannot write the checkpoint {re.escape(str(path))}: "
        rf"{re.escape(os.strerror(code))}",
        str(info.value),
    )
    assert isinstance(info.value.__cause__, OSError)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.safetensors"]
    assert path.read_bytes() == before


# --- stale temporary files ----------------------------------------------------------


def _host():
    """The host as temporary names spell it (letters, digits and '-'; others become '-')."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_save_removes_the_stale_temporary_files_of_its_target(tmp_path):
    host, dead, me = _host(), _dead_pid(), os.getpid()
    stale = [
        f".ckpt.safetensors.{host}.{dead}.0123abcd.tmp",  # its writer, on this host, is dead
        ".ckpt.safetensors.elsewhere.1.11111111.tmp",  # another host's, 2 hours old
        ".ckpt.safetensors.a1b2c3d5.tmp",  # fundl 0.1's name, 2 hours old
    ]
    live = [
        f".ckpt.safetensors.{host}.{me}.89abcdef.tmp",  # a live writer: this process
        f".ckpt.safetensors.elsewhere.{dead}.22222222.tmp",  # another host's, fresh
        ".ckpt.safetensors.a1b2c3d4.tmp",  # fundl 0.1's name, fresh
        f".other.safetensors.{host}.{dead}.33333333.tmp",  # another target's
        "ckpt.safetensors.notes",
    ]
    for name in stale + live:
        (tmp_path / name).write_bytes(b"partial")
    _age(tmp_path / stale[1], 7200)
    _age(tmp_path / stale[2], 7200)
    checkpoint.save(tmp_path / "ckpt", {"x": jnp.ones(1)})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(live + ["ckpt.safetensors"])


def test_temporary_names_carry_host_and_pid(tmp_path, monkeypatch):
    names = []

    def record(f, data):
        names.extend(os.listdir(tmp_path))
        raise KeyboardInterrupt

    monkeypatch.setattr(container, "_write_chunk", record)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "ckpt", {"x": jnp.ones(1)})
    assert len(names) == 1
    assert re.fullmatch(
        rf"\.ckpt\.safetensors\.{re.escape(_host())}\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", names[0]
    )


# --- crafted headers ----------------------------------------------------------------


def _file(header, data=b""):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _u8(offsets, shape=(4,)):
    return {"dtype": "U8", "shape": list(shape), "data_offsets": list(offsets)}


_DEEP = b"[" * 100_000 + b"]" * 100_000

_CRAFTED = [
    (b"", r"not a safetensors file: 0 bytes, fewer than the 8"),
    (b"\x80\x04K", r"not a safetensors file: 3 bytes"),
    (
        b"\x80\x04\x95\x00\x00\x00\x00\x00pickle!",
        (
            r"header length 9766016 is larger than the file \(15 bytes\): truncated, or not a "
            r"safetensors file"
        ),
    ),
    (struct.pack("<Q", 2**40) + b"{}", r"header length 1099511627776 is over safetensors' limit"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", r"header length 18446744073709551615 is over"),
    (_file(b"{nope}"), r"header is not JSON \(.*\): not a safetensors file"),
    (_file(b"\xff\xfe"), r"header is not JSON"),
    (_file(b"[]"), r"header is JSON but not an object \(a list\)"),
    (_file(b"7"), r"header is JSON but not an object \(a int\)"),
    (_file(_DEEP), r"header is not JSON \(nested deeper than the JSON parser follows\)"),
    (_file(b'{"a": 1, "a": 2}'), r"header is not JSON \(duplicate key 'a'\)"),
    (
        _file(b'{"a": {"dtype": "U8", "shape": [NaN], "data_offsets": [0, 1]}}', b"x"),
        r"header is not JSON \(NaN is not JSON\)",
    ),
    (_file(b'{"a": ' + b"9" * 5000 + b"}"), r"header is not JSON \(.*digits"),
    (_file({}), r"no fundl manifest \(no 'fundl' entry in the header's __metadata__\)"),
    (_file({"__metadata__": []}), r"the header's __metadata__ is \[\], not an object of strings"),
    (
        _file({"__metadata__": {"fundl": 5}}),
        r"the header's __metadata__ is \{'fundl': 5\}, not an object of",
    ),
    (_file({"__metadata__": {"fundl": "["}}), r"the fundl manifest is not a JSON object of format"),
    (_file({"a": 5}, b"x"), r"tensor 'a' has a malformed header entry 5: expected \{'dtype'"),
    (_file({"a": {"dtype": "U8", "shape": [1]}}, b"x"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": _u8([0, 4], [-4])}, b"xxxx"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": _u8([-4, 0], [4])}, b"xxxx"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": _u8([0, 4], [True, 4])}, b"xxxx"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": _u8([0, 4], [4.0])}, b"xxxx"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": _u8([0, 4, 8])}, b"xxxx"), r"tensor 'a' has a malformed header entry"),
    (_file({"a": {**_u8([0, 4]), "dtype": 8}}, b"xxxx"), r"tensor 'a' has a malformed header"),
    (_file({"a": {**_u8([0, 4]), "dtype": "F4"}}, b"xxxx"), r"tensor 'a' has dtype 'F4', which"),
    (_file({"a": _u8([0, 1], [1] * 33)}, b"x"), r"tensor 'a' has 33 dimensions, more than the 32"),
    (_file({"a": _u8([4, 0])}, b"xxxx"), r"tensor 'a' spans bytes 4\.\.0, which does not fit"),
    (_file({"a": _u8([0, 8])}, b"x" * 8), r"tensor 'a' spans bytes 0\.\.8, which does not fit"),
    (
        _file({"a": _u8([0, 2**66], [2**66])}),
        (
            r"data shorter than the offsets say: tensor 'a' ends at byte 73786976294838206464 of "
            r"the data but only 0 bytes"
        ),
    ),
    (
        _file({"a": {"dtype": "F32", "shape": [2**62], "data_offsets": [0, 2**64]}}),
        r"data shorter than the offsets say: tensor 'a' ends at byte 18446744073709551616 of",
    ),
    (
        _file({"a": _u8([0, 4]), "b": _u8([0, 4])}, b"xxxx"),
        (
            r"tensor 'b' starts at byte 0 of the data, inside tensor 'a' \(which ends at byte 4\): "
            r"overlapping offsets"
        ),
    ),
    (
        _file({"a": _u8([0, 4]), "b": _u8([2, 6])}, b"x" * 6),
        r"tensor 'b' starts at byte 2 of the data, inside tensor 'a'",
    ),
    (
        _file({"a": _u8([4, 8])}, b"x" * 8),
        (
            r"tensor 'a' starts at byte 4 of the data, leaving bytes 0\.\.4 unused: the offsets "
            r"must tile the data"
        ),
    ),
    (
        _file({"a": _u8([0, 4])}, b"x" * 6),
        (
            r"2 bytes follow the last tensor's data \(which ends at byte 4\): the offsets must "
            r"cover the data to the end of the file"
        ),
    ),
    (_file({}, b"x"), r"1 bytes follow the last tensor's data \(which ends at byte 0\)"),
]


@pytest.mark.parametrize("content, message", _CRAFTED, ids=range(len(_CRAFTED)))
def test_crafted_headers_raise_checkpoint_error(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    for read in (checkpoint.restore, checkpoint.read_metadata):
        with pytest.raises(
            CheckpointError, match=rf"^{read.__name__}: .*bad\.safetensors: {message}"
        ):
            read(path)


def test_the_reference_reader_refuses_overlaps_gaps_and_trailing_bytes_too(tmp_path):
    """fundl's layout rules are the reference reader's (where it has one)."""
    for i, content in enumerate(
        [
            _file({"a": _u8([0, 4]), "b": _u8([0, 4])}, b"xxxx"),
            _file({"a": _u8([4, 8])}, b"x" * 8),
            _file({"a": _u8([0, 4])}, b"x" * 6),
        ]
    ):
        path = tmp_path / f"ref{i}.safetensors"
        path.write_bytes(content)
        with pytest.raises(SafetensorError, match=r"invalid offset|incomplete metadata"):
            safetensors.numpy.load_file(path)


def test_a_safetensors_file_from_another_tool_has_no_manifest(tmp_path):
    path = tmp_path / "torch.safetensors"
    safetensors.numpy.save_file(
        {"weight": np.ones((2, 2), np.float32)}, path, metadata={"format": "pt"}
    )
    with pytest.raises(
        CheckpointError, match=r"no fundl manifest .* read with safetensors\.numpy\.load_file"
    ):
        checkpoint.restore(path)
    assert issubclass(CheckpointError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"restore: no checkpoint at .*missing\.safetensors"
    ):
        checkpoint.restore(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"read_metadata: no checkpoint at .*missing"):
        checkpoint.read_metadata(tmp_path / "missing")


def test_truncated_checkpoints(tmp_path, params):
    path = checkpoint.save(tmp_path / "full", params)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cuts = {
        5: r"not a safetensors file: 5 bytes",
        8 + n // 2: rf"header length {n} is larger than the file \({8 + n // 2} bytes\): truncated",
        8 + n + 3: r"data shorter than the offsets say: tensor '.*' ends at byte \d+ of the data "
        r"but only 3 bytes follow the header",
        len(raw)
        - 1: r"data shorter than the offsets say: tensor '.*' ends at byte \d+ of the data",
    }
    for cut, message in cuts.items():
        short = tmp_path / f"cut{cut}.safetensors"
        short.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=rf"restore: .*cut{cut}\.safetensors: {message}"):
            checkpoint.restore(short)
        with pytest.raises(CheckpointError, match=message):
            checkpoint.read_metadata(short)


def test_a_bool_tensor_holds_only_zeros_and_ones(tmp_path, rewrite_manifest):
    path = checkpoint.save(tmp_path / "b", {"flags": np.array([True, False])})
    raw = bytearray(path.read_bytes())
    raw[_data_start(path)] = 2
    path.write_bytes(bytes(raw))
    crc = zlib.crc32(bytes([2, 0]))
    rewrite_manifest(path, lambda m: m["leaves"]["flags"].update(crc32=crc))
    with pytest.raises(
        CheckpointError, match=r"restore: .*b\.safetensors: tensor 'flags' \(\['flags'\]\) is BOOL"
    ):
        checkpoint.restore(path)
