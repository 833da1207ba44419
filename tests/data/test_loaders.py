"""fundl.data.loaders: digits offline; IDX and .npz readers on files the tests write."""

import gzip
import pathlib
import pickle
import re
import struct
import sys
import tracemalloc
import zipfile
import zlib

import chex
import numpy as np
import pytest

from fundl.data import load_digits, load_idx, load_npz

MiB = 1 << 20


def _peak_bytes(fn, *args):
    """Run ``fn(*args)``; return (its result or the exception it raised, the peak traced bytes)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as err:  # noqa: BLE001 - the caller asserts on it
            out = err
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- load_digits


def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(np.unique(y).tolist()) == list(range(10))
    raw, y_raw = load_digits(as_float=False)
    assert raw.dtype == np.uint8 and raw.max() == 16
    np.testing.assert_array_equal(x, raw.astype(np.float32) / 16)
    np.testing.assert_array_equal(y, y_raw)


def test_load_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(
        ImportError,
        match=re.escape(
            "load_digits needs scikit-learn: pip install 'fundl[examples]' (or pip install scikit-learn)"
        ),
    ):
        load_digits()


def test_load_digits_checks_as_float():
    with pytest.raises(
        ValueError, match=re.escape("load_digits: as_float must be True or False, got 1")
    ):
        load_digits(as_float=1)


# ----------------------------------------------------------------------------- load_idx


_CODES = {
    np.uint8: 0x08,
    np.int8: 0x09,
    np.int16: 0x0B,
    np.int32: 0x0C,
    np.float32: 0x0D,
    np.float64: 0x0E,
}


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, _CODES[array.dtype.type], array.ndim])
    header = magic + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: pathlib.Path, content: bytes, *, gz: bool = False) -> pathlib.Path:
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def _mnist_like(n=5, rows=4, cols=3):
    images = np.arange(n * rows * cols, dtype=np.uint8).reshape(n, rows, cols)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_round_trip(tmp_path, gz):
    images, labels = _mnist_like()
    suffix = ".gz" if gz else ""
    ip = _write(tmp_path / f"images-idx3-ubyte{suffix}", _idx_bytes(images), gz=gz)
    lp = _write(tmp_path / f"labels-idx1-ubyte{suffix}", _idx_bytes(labels), gz=gz)
    x, y = load_idx(ip, lp)
    assert x.dtype == np.uint8 and y.dtype == np.int32
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(load_idx(str(ip)), images)


def test_load_idx_trusts_content_over_the_name(tmp_path):
    images, _ = _mnist_like()
    raw_named_gz = _write(tmp_path / "images.gz", _idx_bytes(images))  # a browser un-gzipped it
    gz_named_raw = _write(tmp_path / "images-idx3-ubyte", _idx_bytes(images), gz=True)
    np.testing.assert_array_equal(load_idx(raw_named_gz), images)
    np.testing.assert_array_equal(load_idx(gz_named_raw), images)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_load_idx_big_endian_types(tmp_path, dtype):
    images = (np.arange(2 * 3 * 2) - 5).astype(dtype).reshape(2, 3, 2) * 3
    x = load_idx(_write(tmp_path / "x.idx", _idx_bytes(images)))
    assert x.dtype == np.dtype(dtype) and x.dtype.isnative
    np.testing.assert_array_equal(x, images)


def test_load_idx_rejects_bad_magic_and_type(tmp_path):
    images, _ = _mnist_like()
    content = _idx_bytes(images)
    bad = _write(tmp_path / "bad", b"\x01\x02" + content[2:])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {bad} is not an IDX file: expected the magic 00 00 <type> <ndim>, found 01 02 08 03"
        ),
    ):
        load_idx(bad)
    empty = _write(tmp_path / "empty", b"")
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {empty} is not an IDX file: expected the magic 00 00 <type> <ndim>, found an empty file"
        ),
    ):
        load_idx(empty)
    code = _write(tmp_path / "code", content[:2] + b"\x0a" + content[3:])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {code} has unknown IDX type code 0x0a (magic 00 00 0a 03); known: 0x08 (ubyte), 0x09 (sbyte)"
        ),
    ):
        load_idx(code)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_rejects_truncated_and_oversized_files(tmp_path, gz):
    images, _ = _mnist_like()  # header 4 + 3·4 = 16 bytes, data 60 bytes
    content = _idx_bytes(images)
    what = "bytes once decompressed" if gz else "bytes"
    short = _write(tmp_path / "short", content[:-1], gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {short} is truncated: shape (5, 4, 3) of ubyte needs 76 {what} (header 16 + data 60), found 75"
        ),
    ):
        load_idx(short)
    long = _write(tmp_path / "long", content + b"\x00\x00", gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {long} is oversized: shape (5, 4, 3) of ubyte needs 76 {what} (header 16 + data 60), found 78"
        ),
    ):
        load_idx(long)
    header = _write(tmp_path / "header", content[:10], gz=gz)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {header} is truncated: its header needs 16 {what} for 3 dims, found 10"
        ),
    ):
        load_idx(header)


def test_load_idx_rejects_a_broken_gzip(tmp_path):
    images, _ = _mnist_like()
    broken = _write(tmp_path / "broken.gz", gzip.compress(_idx_bytes(images))[:-12])
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {broken} starts with the gzip magic bytes 1f 8b but does not decompress"
        ),
    ):
        load_idx(broken)


def test_load_idx_checks_dims_and_counts(tmp_path):
    images, labels = _mnist_like(n=5)
    ip = _write(tmp_path / "images", _idx_bytes(images))
    lp = _write(tmp_path / "labels", _idx_bytes(labels))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {lp} holds an array of shape (5,); images must have 3 dims (n, rows, cols)"
        ),
    ):
        load_idx(lp, ip)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_idx: {ip} holds uint8 of shape (5, 4, 3); labels must be integers with 1 dim (n,)"
        ),
    ):
        load_idx(ip, ip)
    floats = _write(tmp_path / "floats", _idx_bytes(labels.astype(np.float32)))
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_idx: {floats} holds float32 of shape (5,); labels must be integers"),
    ):
        load_idx(ip, floats)
    fewer = _write(tmp_path / "fewer", _idx_bytes(labels[:4]))
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_idx: {ip} has 5 images but {fewer} has 4 labels"),
    ):
        load_idx(ip, fewer)


def _gzip_stream(*parts, zeros: int = 0) -> bytes:
    """gzip of the parts followed by ``zeros`` zero bytes, compressed a MiB at a time."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    out = [z.compress(p) for p in parts]
    block = bytes(MiB)
    for _ in range(zeros // MiB):
        out.append(z.compress(block))
    out.append(z.flush())
    return b"".join(out)


def test_load_idx_stops_reading_a_gzip_bomb_once_it_runs_long(tmp_path):
    images, _ = _mnist_like()  # needs 76 bytes; the file expands to 32 MiB more
    bomb = _write(tmp_path / "bomb.gz", _gzip_stream(_idx_bytes(images), zeros=32 * MiB))
    err, peak = _peak_bytes(load_idx, bomb)
    assert peak < 2 * MiB  # not the 32 MiB the file expands to
    assert isinstance(err, ValueError)
    assert re.search(
        re.escape(
            f"load_idx: {bomb} is oversized: shape (5, 4, 3) of ubyte needs 76 bytes once "
            f"decompressed (header 16 + data 60), found more than {76 + MiB}"
        ),
        str(err),
    )


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_rejects_a_header_claiming_10_gb_before_reading_on(tmp_path, gz):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10_000, 1_000, 1_000)
    path = _write(tmp_path / "huge", header + bytes(60), gz=gz)
    size = path.stat().st_size
    found = f"but its {size} gzip bytes expand to at most {1032 * size}" if gz else "found 76"
    what = "bytes once decompressed" if gz else "bytes"
    err, peak = _peak_bytes(load_idx, path)
    assert isinstance(err, ValueError)
    assert re.search(
        re.escape(
            f"load_idx: {path} is truncated: shape (10000, 1000, 1000) of ubyte needs "
            f"10000000016 {what} (header 16 + data 10000000000), {found}"
        ),
        str(err),
    )
    assert peak < MiB


def test_load_idx_memory_follows_the_data_not_the_header(tmp_path):
    # The header claims 8 MiB (possible for these gzip bytes); the file holds 1 MiB.
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 128, 256, 256)
    data = np.random.default_rng(0).integers(0, 256, MiB, dtype=np.uint8).tobytes()
    path = _write(tmp_path / "short.gz", header + data, gz=True)
    err, peak = _peak_bytes(load_idx, path)
    assert isinstance(err, ValueError)
    assert f"is truncated: shape (128, 256, 256) of ubyte needs {16 + 8 * MiB}" in str(err)
    assert f"found {16 + MiB}" in str(err)
    assert peak < 4 * MiB


def test_load_idx_holds_one_copy_of_the_array(tmp_path):
    images = (np.arange(64 * 256 * 256) % 251).astype(np.uint8).reshape(64, 256, 256)  # 4 MiB
    path = _write(tmp_path / "images.gz", _idx_bytes(images), gz=True)
    x, peak = _peak_bytes(load_idx, path)
    np.testing.assert_array_equal(x, images)
    assert x.flags.writeable
    assert peak < 5.5 * MiB  # the array, one chunk and the decompressor; not two copies


# ----------------------------------------------------------------------------- load_npz


def test_load_npz_round_trip(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "y": np.array([0, 1, 1, 0])}
    path = tmp_path / "d.npz"
    np.savez_compressed(path, **arrays)
    loaded = load_npz(path)
    assert list(loaded) == ["x", "y"]
    chex.assert_trees_all_equal(loaded, arrays)
    assert list(load_npz(str(path), keys=["y"])) == ["y"]
    np.testing.assert_array_equal(load_npz(path, "x")["x"], arrays["x"])
    with pytest.raises(
        KeyError,
        match=re.escape(f"load_npz: {path} has no ['z']; available keys: ['x', 'y']"),
    ):
        load_npz(path, keys=["x", "z"])


def test_load_npz_refuses_object_arrays_without_suggesting_pickle(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.zeros(2), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_npz: {path} member 'obj' is an object array (dtype object), which only "
            f"pickle can read, and fundl does not unpickle"
        ),
    ) as info:
        load_npz(path)
    assert "allow_pickle" not in str(info.value)
    np.testing.assert_array_equal(load_npz(path, "x")["x"], np.zeros(2))


def test_load_npz_says_when_a_file_is_not_an_npz_archive(tmp_path):
    pickled = _write(tmp_path / "data.npz", pickle.dumps({"x": [1, 2]}))
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_npz: {pickled} is not an .npz (zip) archive: it starts with 80 "),
    ) as info:
        load_npz(pickled)
    assert str(info.value).endswith("not the zip signature 50 4b 03 04")
    assert "pickle" not in str(info.value)
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"load_npz: {npy} is not an .npz (zip) archive: it starts with 93 4e 55 4d, not the "
            f"zip signature 50 4b 03 04; it is a .npy file (one array): read it with np.load"
        ),
    ):
        load_npz(npy)
    empty = _write(tmp_path / "empty.npz", b"")
    with pytest.raises(
        ValueError, match=re.escape(f"{empty} is not an .npz (zip) archive: it is empty")
    ):
        load_npz(empty)
    broken = _write(tmp_path / "broken.npz", b"PK\x03\x04" + bytes(30))
    with pytest.raises(
        ValueError, match=re.escape(f"load_npz: {broken} is not a readable .npz (zip) archive")
    ):
        load_npz(broken)


def test_load_npz_refuses_members_that_are_not_npy_arrays(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not an array")
    with pytest.raises(
        ValueError,
        match=re.escape(f"load_npz: {path} member 'readme.txt' is not a .npy array"),
    ):
        load_npz(path)


def test_loaders_check_paths_and_keys(tmp_path):
    with pytest.raises(
        ValueError,
        match=re.escape("load_npz: path must be a path (a str or os.PathLike), got 3"),
    ):
        load_npz(3)
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros(2))
    for bad in (5, ["x", 1]):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"load_npz: keys must be a str, a sequence of str or None, got {bad!r}"
            ),
        ):
            load_npz(path, bad)
    with pytest.raises(
        ValueError,
        match=re.escape("load_idx: images_path must be a path (a str or os.PathLike), got None"),
    ):
        load_idx(None)
    with pytest.raises(
        ValueError,
        match=re.escape("load_idx: labels_path must be a path (a str or os.PathLike), got 2"),
    ):
        load_idx(path, 2)
