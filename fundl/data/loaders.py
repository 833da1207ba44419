"""Offline loaders: scikit-learn's digits, MNIST-style IDX files and ``.npz`` archives.

Nothing here downloads anything. The file readers trust no header: an IDX file's claimed
shape is checked against what the file can hold before its payload is read, and
``.npz`` archives are read without pickle.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

import numpy as np

from fundl._validate import check_bool

__all__ = ["load_digits", "load_idx", "load_npz"]


def _check_path(name: str, arg: str, path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{name}: {arg} must be a path (a str or os.PathLike), got {path!r}")
    return os.fspath(path)


def load_digits(*, as_float: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 handwritten digits (1797 examples, 10 classes), read offline.

    The data ship inside scikit-learn (the ``examples`` extra); nothing is downloaded.

    Args:
      as_float: return pixels as float32 scaled to [0, 1] (value / 16); else the raw
        values 0..16 as uint8.

    Returns:
      (x, y): x (1797, 64) — the 8×8 image flattened row by row — and y (1797,) int32
      in [0, 10), both numpy.

    Raises:
      ImportError: scikit-learn is not installed.

    Examples:
      >>> x, y = fundl.data.load_digits()
      >>> x.shape, x.dtype, y.shape, y.dtype, float(x.max()), y[:5].tolist()
      ((1797, 64), dtype('float32'), (1797,), dtype('int32'), 1.0, [0, 1, 2, 3, 4])
    """
    as_float = check_bool("load_digits", "as_float", as_float)
    try:
        from sklearn.datasets import load_digits as _sklearn_load_digits
    except ImportError as err:
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'fundl[examples]' "
            "(or pip install scikit-learn)"
        ) from err
    x, y = _sklearn_load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32) if as_float else x.astype(np.uint8)
    return x, y.astype(np.int32)


# --------------------------------------------------------------------------- IDX

# IDX type code -> (big-endian numpy dtype, name)
_IDX_TYPES = {
    0x08: (">u1", "ubyte"),
    0x09: (">i1", "sbyte"),
    0x0B: (">i2", "short"),
    0x0C: (">i4", "int"),
    0x0D: (">f4", "float"),
    0x0E: (">f8", "double"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# DEFLATE cannot expand data more than 1032-fold, so a gzip file of s bytes never
# decompresses to more than 1032·s: a header claiming more describes a truncated file.
_MAX_DEFLATE_RATIO = 1032
# The payload is read this many bytes at a time (each read of a gzip stream makes
# temporary copies of its chunk, so chunks stay small) ...
_CHUNK = 1 << 18
# ... and at most about this many bytes past its end, to tell "oversized by a few
# bytes" (the message gives the exact size) from "oversized by a lot" (a gzip bomb).
_EXTRA_LIMIT = 1 << 20


def _read_idx(path: str) -> np.ndarray:
    """Parse one IDX file (gzip or raw) into a native-endian numpy array.

    Only the header is read before the payload's size is checked against the file's:
    on disk for a raw file, against the largest possible expansion for a gzip file,
    whose payload then decompresses in bounded chunks and stops as soon as it runs
    short or long. Memory stays at the size of the array the file really holds.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        # Trust the content, not the name: browsers often un-gzip a download but keep ".gz".
        compressed = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not compressed:
            return _parse_idx(path, f, size, compressed=False)
        try:
            with gzip.GzipFile(fileobj=f) as stream:
                return _parse_idx(path, stream, size, compressed=True)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(
                f"load_idx: {path} starts with the gzip magic bytes 1f 8b but does not "
                f"decompress ({err}); the download may be truncated"
            ) from err


def _parse_idx(path: str, stream: BinaryIO, size: int, *, compressed: bool) -> np.ndarray:
    what = "bytes once decompressed" if compressed else "bytes"
    magic = stream.read(4)
    if len(magic) < 4 or magic[:2] != b"\x00\x00":
        raise ValueError(
            f"load_idx: {path} is not an IDX file: expected the magic 00 00 <type> <ndim>, "
            f"found {magic.hex(' ') or 'an empty file'}"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_TYPES:
        known = ", ".join(f"0x{c:02x} ({name})" for c, (_, name) in _IDX_TYPES.items())
        raise ValueError(
            f"load_idx: {path} has unknown IDX type code 0x{code:02x} (magic {magic.hex(' ')}); "
            f"known: {known}"
        )
    header = 4 + 4 * ndim
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(
            f"load_idx: {path} is truncated: its header needs {header} {what} for {ndim} dims, "
            f"found {4 + len(raw_dims)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
    dtype = np.dtype(_IDX_TYPES[code][0])
    payload = math.prod(dims) * dtype.itemsize
    expected = header + payload

    def wrong_size(problem: str, found: str) -> ValueError:
        return ValueError(
            f"load_idx: {path} is {problem}: shape {dims} of {_IDX_TYPES[code][1]} needs "
            f"{expected} {what} (header {header} + data {payload}), {found}"
        )

    if not compressed and size != expected:
        raise wrong_size("truncated" if size < expected else "oversized", f"found {size}")
    if compressed and expected > _MAX_DEFLATE_RATIO * size:
        limit = _MAX_DEFLATE_RATIO * size
        raise wrong_size("truncated", f"but its {size} gzip bytes expand to at most {limit}")
    data = _read_payload(stream, payload, capacity=_CHUNK if compressed else payload)
    if len(data) < payload:
        raise wrong_size("truncated", f"found {header + len(data)}")
    if compressed:
        extra = _count_rest(stream, limit=_EXTRA_LIMIT)
        if extra > _EXTRA_LIMIT:
            raise wrong_size("oversized", f"found more than {expected + _EXTRA_LIMIT}")
        if extra:
            raise wrong_size("oversized", f"found {expected + extra}")
    array = data.view(dtype).reshape(dims)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def _read_payload(stream: BinaryIO, nbytes: int, *, capacity: int) -> np.ndarray:
    """Up to ``nbytes`` bytes of ``stream`` (fewer at its end) as a uint8 array.

    The buffer starts at ``capacity`` bytes and doubles, never past ``nbytes``, so a
    header that claims more than the stream holds costs at most twice what it holds.
    """
    buffer = np.empty(min(capacity, nbytes), np.uint8)
    got = 0
    while got < nbytes:
        if got == len(buffer):
            buffer.resize(min(2 * len(buffer), nbytes), refcheck=False)
        read = stream.readinto(memoryview(buffer)[got : min(got + _CHUNK, len(buffer))])
        if not read:
            break
        got += read
    return buffer[:got]


def _count_rest(stream: BinaryIO, *, limit: int) -> int:
    """How many bytes remain in ``stream``; past ``limit``, some number above it."""
    count = 0
    while count <= limit:
        chunk = stream.read(1 << 16)
        if not chunk:
            break
        count += len(chunk)
    return count


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Read MNIST / Fashion-MNIST IDX files you already have (gzip or raw).

    IDX layout: the magic 00 00, a type code (0x08 ubyte, 0x09 sbyte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double; big-endian), the number of dims, each dim as a
    big-endian uint32, then the values in C order. A file is decompressed when it starts
    with the gzip magic 1f 8b, whatever its name. Nothing is downloaded.

    The header is checked before the payload is read: a claimed shape the file cannot
    hold (more bytes than a raw file has, or than its gzip bytes can expand to) fails
    at once, and a gzip payload is decompressed in bounded chunks that stop as soon as
    it runs short or long, so memory stays near the size of the real array.

    Args:
      images_path: the images file, e.g. ``train-images-idx3-ubyte.gz`` (3 dims).
      labels_path: the labels file, e.g. ``train-labels-idx1-ubyte.gz`` (1 dim), or None.

    Returns:
      images (n, rows, cols) in the file's dtype (uint8 for MNIST), or
      (images, labels) with labels (n,) int32, as numpy arrays.

    Raises:
      ValueError: a bad magic or type code, a truncated or oversized file (the message
        gives the expected and actual sizes), wrong dims, or images and labels that
        disagree on n.

    Examples:
      Two images of 2×3 ubyte pixels and their labels, written as IDX and read back:

      >>> import os, struct, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     images, labels = os.path.join(d, "images"), os.path.join(d, "labels")
      ...     with open(images, "wb") as f:  # magic, type 0x08 (ubyte), 3 dims, values
      ...         _ = f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12)))
      ...     with open(labels, "wb") as f:
      ...         _ = f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes([7, 1]))
      ...     x, y = fundl.data.load_idx(images, labels)
      >>> x.shape, x.dtype, x[1, 0].tolist(), y.tolist(), y.dtype
      ((2, 2, 3), dtype('uint8'), [6, 7, 8], [7, 1], dtype('int32'))
    """
    images_path = _check_path("load_idx", "images_path", images_path)
    if labels_path is not None:
        labels_path = _check_path("load_idx", "labels_path", labels_path)
    images = _read_idx(images_path)
    if images.ndim != 3:
        raise ValueError(
            f"load_idx: {images_path} holds an array of shape {images.shape}; "
            f"images must have 3 dims (n, rows, cols)"
        )
    if labels_path is None:
        return images
    labels = _read_idx(labels_path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"load_idx: {labels_path} holds {labels.dtype} of shape {labels.shape}; "
            f"labels must be integers with 1 dim (n,)"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"load_idx: {images_path} has {images.shape[0]} images but "
            f"{labels_path} has {labels.shape[0]} labels"
        )
    return images, labels.astype(np.int32)


# --------------------------------------------------------------------------- npz

# A zip archive starts with a local file header, or (with no members) the end record.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def load_npz(path: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read the arrays of a ``.npz`` file into a dict, without pickle.

    A pickle can run code when it is read, so fundl never unpickles: an object array
    (dtype object, which only pickle can store) is refused with a message saying so.

    Args:
      path: the .npz file (from ``np.savez`` or ``np.savez_compressed``).
      keys: the names to read (a str for one), or None for all.

    Returns:
      ``{name: array}`` in the order of ``keys`` (or of the file).

    Raises:
      ValueError: the file is not an ``.npz`` (zip) archive, or a member is not a plain
        ``.npy`` array (an object array, or not a ``.npy`` at all).
      KeyError: a requested key is not in the file (the message lists those that are).

    Examples:
      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = os.path.join(d, "data.npz")
      ...     np.savez(path, x=np.ones((3, 2), np.float32), y=np.arange(3))
      ...     everything, only_y = fundl.data.load_npz(path), fundl.data.load_npz(path, "y")
      >>> {name: a.shape for name, a in everything.items()}, only_y["y"].tolist()
      ({'x': (3, 2), 'y': (3,)}, [0, 1, 2])
    """
    path = _check_path("load_npz", "path", path)
    if keys is not None:
        names = list(keys) if isinstance(keys, Iterable) and not isinstance(keys, str) else [keys]
        if not all(isinstance(k, str) for k in names):
            raise ValueError(
                f"load_npz: keys must be a str, a sequence of str or None, got {keys!r}"
            )
        keys = names
    with open(path, "rb") as f:
        start = f.read(len(_NPY_MAGIC))
    if not start.startswith(_ZIP_MAGICS):
        found = f"it starts with {start[:4].hex(' ')}" if start else "it is empty"
        hint = (
            "; it is a .npy file (one array): read it with np.load" if start == _NPY_MAGIC else ""
        )
        raise ValueError(
            f"load_npz: {path} is not an .npz (zip) archive: {found}, not the zip "
            f"signature 50 4b 03 04{hint}"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except zipfile.BadZipFile as err:
        raise ValueError(f"load_npz: {path} is not a readable .npz (zip) archive: {err}") from err
    with archive:
        available = list(archive.files)
        wanted = available if keys is None else keys
        missing = [k for k in wanted if k not in available]
        if missing:
            raise KeyError(f"load_npz: {path} has no {missing}; available keys: {available}")
        return {k: _read_member(path, archive, k) for k in wanted}


def _read_member(path: str, archive: Any, key: str) -> np.ndarray:
    try:
        value = archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        # numpy refuses an object array with a message naming allow_pickle; that message
        # is not passed on (from None), since the fix it hints at would unpickle.
        if "allow_pickle" not in str(err):
            raise ValueError(
                f"load_npz: {path} member {key!r} is not a valid .npy array ({err})"
            ) from err
        raise ValueError(
            f"load_npz: {path} member {key!r} is an object array (dtype object), which "
            f"only pickle can read, and fundl does not unpickle (a pickle can run code "
            f"when loaded); save it as a numeric or string array instead"
        ) from None
    if not isinstance(value, np.ndarray):
        raise ValueError(
            f"load_npz: {path} member {key!r} is not a .npy array (np.savez writes only "
            f".npy members)"
        )
    return value
