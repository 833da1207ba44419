"""The safetensors container: tensors by name, a string-to-string ``__metadata__``, raw bytes.

Writing lays the tensors out back to back (widest dtype first, so every tensor is
aligned), writes the file beside its target under a temporary name, fsyncs and renames
it: a reader never sees half a file. Reading trusts nothing: the header is strict JSON
(no duplicate keys, no NaN), every entry is checked, and the tensors must tile the data
exactly, as the reference ``safetensors`` reader requires. Each tensor can be verified
against a CRC-32 of its bytes as it is read.

Errors here say the file and the problem; the public functions add their own name (see
:mod:`fundl.checkpoint.errors`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import secrets
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple

import jax.numpy as jnp
import numpy as np

from fundl.checkpoint.errors import CheckpointError

__all__ = [
    "DTYPES",
    "DTYPE_CODES",
    "MAX_HEADER",
    "MAX_RANK",
    "STALE_AFTER",
    "SUFFIX",
    "Entry",
    "Header",
    "Tensor",
    "checkpoint_path",
    "clip",
    "encode_tensor",
    "open_file",
    "parse_json",
    "read_header",
    "read_tensor",
    "remove_stale_temps",
    "write_file",
]

SUFFIX = ".safetensors"
MAX_HEADER = 100_000_000  # safetensors' own limit on the header length, in bytes
MAX_RANK = 32  # numpy 1.x's limit on dimensions
STALE_AFTER = 3600.0  # seconds: a temporary file this old is abandoned, whoever wrote it

# numpy dtype name -> safetensors dtype code
DTYPE_CODES = {
    "bool": "BOOL",
    "uint8": "U8",
    "int8": "I8",
    "uint16": "U16",
    "int16": "I16",
    "float16": "F16",
    "bfloat16": "BF16",
    "uint32": "U32",
    "int32": "I32",
    "float32": "F32",
    "uint64": "U64",
    "int64": "I64",
    "float64": "F64",
    "complex64": "C64",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
DTYPES = {code: jnp.dtype(name) for name, code in DTYPE_CODES.items()}


class Tensor(NamedTuple):
    """One array ready to write."""

    dtype: str  # the safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]
    data: np.ndarray  # its little-endian bytes, uint8 of shape (nbytes,)
    crc32: int  # zlib.crc32 of those bytes


class Entry(NamedTuple):
    """One tensor's header entry, checked."""

    dtype: str  # the safetensors dtype code
    shape: tuple[int, ...]
    start: int  # byte offsets into the data (after the header), end exclusive
    end: int


class Header(NamedTuple):
    """A checked safetensors header."""

    path: pathlib.Path
    tensors: dict[str, Entry]
    metadata: dict[str, str]  # the header's __metadata__
    data_start: int  # the file offset of the data: 8 + the header's length


def checkpoint_path(path: Any) -> pathlib.Path:
    """``path`` as a ``Path`` ending in ``.safetensors`` (the suffix is added when missing)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
    p = pathlib.Path(path).expanduser()
    if not p.name or p.name in (".", ".."):
        raise ValueError(f"path must name a file, got {str(path)!r}")
    return p if p.name.endswith(SUFFIX) else p.with_name(p.name + SUFFIX)


def clip(text: str, limit: int = 200) -> str:
    """``text``, cut to ``limit`` characters: a hostile file must not fill an error message."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


# --- strict JSON ----------------------------------------------------------------------


def _unique_keys(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {clip(key, 60)!r}")
            seen.add(key)
    return result


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, stricter: duplicate keys and NaN/Infinity are refused.

    Raises ``ValueError`` describing the problem (a nesting too deep for the parser
    included).
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested deeper than the JSON parser follows") from None


# --- writing --------------------------------------------------------------------------


def encode_tensor(array: np.ndarray) -> Tensor:
    """``array``'s safetensors dtype code, shape, little-endian bytes and their CRC-32."""
    data = np.ascontiguousarray(array)
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big"):
        data = data.byteswap()
    raw = data.reshape(-1).view(np.uint8)
    return Tensor(DTYPE_CODES[data.dtype.name], tuple(array.shape), raw, zlib.crc32(raw))


def _write_chunk(f: BinaryIO, data: Any) -> None:
    """Write one chunk (the header or one tensor's bytes) to the open temporary file."""
    f.write(data)


def _fsync_directory(directory: pathlib.Path) -> None:
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _write_error(target: pathlib.Path, error: OSError) -> OSError:
    """``error`` again, same errno (so the same OSError subclass), naming the target."""
    message = f"cannot write the checkpoint {target}: {error.strerror or error}"
    return OSError(error.errno, message) if error.errno is not None else OSError(message)


def write_file(target: pathlib.Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically: a temporary file beside ``target``, fsync, rename.

    The temporary file is ``.<target name>.<host>.<pid>.<random>.tmp``; it is removed on
    any error (``KeyboardInterrupt`` included), and temporary files of ``target`` that
    dead writers left behind are removed first (see :func:`remove_stale_temps`).
    An ``OSError`` (a full disk, say) comes back with its errno and the target's path.
    """
    header: dict[str, Any] = {"__metadata__": metadata}
    order = sorted(tensors, key=lambda t: (-DTYPES[tensors[t].dtype].itemsize, t))
    chunks, offset = [], 0
    for name in order:
        tensor = tensors[name]
        end = offset + tensor.data.nbytes
        header[name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        chunks.append(tensor.data)
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    chunks.insert(0, struct.pack("<Q", len(text)) + text)

    tmp = target.with_name(f".{target.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target.parent, re.escape(target.name))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                _write_chunk(f, chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _write_error(target, error) from error
        raise
    _fsync_directory(target.parent)


# --- stale temporary files ------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still run (unsure counts as alive)."""
    if os.name == "nt" or pid <= 0:  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it runs, as another user
        return True
    return True


def remove_stale_temps(directory: pathlib.Path, target: str) -> list[pathlib.Path]:
    """Delete the temporary files that killed writers of ``target`` left in ``directory``.

    ``target`` is a regular expression for the target file names (``step_\\d+\\.safetensors``).
    A temporary file is stale when its writer ran on this host and is dead, or when it was
    last written more than :data:`STALE_AFTER` seconds ago (a writer on another host, or
    the random-suffix names of fundl 0.1). The file of a live writer is never touched.
    Best effort: files that vanish or cannot be deleted are skipped.

    Returns:
      the files removed.
    """
    pattern = re.compile(
        rf"\.(?:{target})\.(?:(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.)?[0-9a-f]{{8}}\.tmp"
    )
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    removed, host, now = [], _host(), time.time()
    for name in names:
        match = pattern.fullmatch(name)
        if not match:
            continue
        path = directory / name
        try:
            age = now - path.stat().st_mtime
            dead = match["host"] == host and not _alive(int(match["pid"]))
            if age > STALE_AFTER or dead:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


# --- reading --------------------------------------------------------------------------


@contextlib.contextmanager
def open_file(path: pathlib.Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading; ``FileNotFoundError`` naming it when it is missing.

    Header and data are read through this one handle, so a concurrent save that renames
    a new file onto ``path`` cannot mix two files.
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}") from None
    with f:
        yield f


def _is_count(x: Any) -> bool:
    return type(x) is int and x >= 0


def _entry(fail: Callable[[str], CheckpointError], tensor: str, entry: Any) -> Entry:
    ok = isinstance(entry, dict)
    if ok:
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        ok = (
            isinstance(dtype, str)
            and isinstance(shape, list)
            and all(_is_count(n) for n in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_count(n) for n in offsets)
        )
    if not ok:
        raise fail(
            f"tensor {clip(tensor, 80)!r} has a malformed header entry {clip(repr(entry))}: "
            "expected {'dtype': a dtype code, 'shape': a list of integers >= 0, "
            "'data_offsets': [start, end], integers >= 0}"
        )
    if dtype not in DTYPES:
        raise fail(
            f"tensor {clip(tensor, 80)!r} has dtype {clip(dtype, 40)!r}, which fundl cannot read"
        )
    if len(shape) > MAX_RANK:
        raise fail(
            f"tensor {clip(tensor, 80)!r} has {len(shape)} dimensions, more than the {MAX_RANK} "
            "a checkpoint may hold"
        )
    start, end = offsets
    if end - start != math.prod(shape) * DTYPES[dtype].itemsize:
        raise fail(
            f"tensor {clip(tensor, 80)!r} spans bytes {start}..{end}, which does not fit its "
            f"dtype {dtype} and shape {clip(str(shape), 80)}"
        )
    return Entry(dtype, tuple(shape), start, end)


def _check_layout(
    fail: Callable[[str], CheckpointError], tensors: dict[str, Entry], available: int
) -> None:
    """The tensors must tile the data: sorted by offset, from byte 0 to the file's end."""
    order = sorted(tensors, key=lambda t: (tensors[t].start, tensors[t].end))
    position, previous = 0, None
    for tensor in order:
        entry = tensors[tensor]
        if entry.start < position:
            raise fail(
                f"tensor {clip(tensor, 80)!r} starts at byte {entry.start} of the data, inside "
                f"tensor {clip(previous, 80)!r} (which ends at byte {position}): "
                "overlapping offsets"
            )
        if entry.start > position:
            raise fail(
                f"tensor {clip(tensor, 80)!r} starts at byte {entry.start} of the data, leaving "
                f"bytes {position}..{entry.start} unused: the offsets must tile the data"
            )
        position, previous = entry.end, tensor
    for tensor in order:
        if tensors[tensor].end > available:
            raise fail(
                f"data shorter than the offsets say: tensor {clip(tensor, 80)!r} ends at byte "
                f"{tensors[tensor].end} of the data but only {available} bytes follow the "
                "header (truncated?)"
            )
    if position < available:
        raise fail(
            f"{available - position} bytes follow the last tensor's data (which ends at byte "
            f"{position}): the offsets must cover the data to the end of the file"
        )


def read_header(f: BinaryIO, path: pathlib.Path) -> Header:
    """Read and check the safetensors header of the open file ``f`` (``path`` names it).

    Checks everything that can be checked without reading the data: the header length,
    strict JSON, each entry's dtype, shape and offsets, that the tensors tile the data
    from byte 0 to the end of the file, and that ``__metadata__`` maps strings to strings.

    Raises:
      CheckpointError: naming ``path`` and the problem.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}")

    size = os.fstat(f.fileno()).st_size
    if size < 8:
        raise fail(
            f"not a safetensors file: {size} bytes, fewer than the 8 that give the header length"
        )
    (length,) = struct.unpack("<Q", f.read(8))
    if length > MAX_HEADER:
        raise fail(
            f"header length {length} is over safetensors' limit of {MAX_HEADER}: "
            "not a safetensors file"
        )
    if length > size - 8:
        raise fail(
            f"header length {length} is larger than the file ({size} bytes): truncated, "
            "or not a safetensors file"
        )
    raw = f.read(length)
    try:
        header = parse_json(raw.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        raise fail(f"header is not JSON ({clip(str(e))}): not a safetensors file") from None
    if not isinstance(header, dict):
        raise fail(
            f"header is JSON but not an object (a {type(header).__name__}): not a safetensors file"
        )
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail(
            f"the header's __metadata__ is {clip(repr(metadata))}, not an object of strings: "
            "not a safetensors file"
        )
    tensors = {t: _entry(fail, t, e) for t, e in header.items() if t != "__metadata__"}
    _check_layout(fail, tensors, size - 8 - length)
    return Header(path, tensors, metadata, 8 + length)


def read_tensor(
    f: BinaryIO, header: Header, tensor: str, *, crc32: int | None = None, where: str = ""
) -> np.ndarray:
    """The array of ``tensor``, verified against ``crc32`` when one is given.

    Args:
      f: the open file ``header`` was read from.
      tensor: a name in ``header.tensors``.
      crc32: the CRC-32 the bytes must have, or ``None`` (files without checksums).
      where: the tensor's key path, for messages.

    Raises:
      CheckpointError: when the bytes are short or fail the checksum.
    """
    entry = header.tensors[tensor]
    label = f"tensor {tensor!r}" + (f" ({where})" if where and where != tensor else "")
    f.seek(header.data_start + entry.start)
    raw = f.read(entry.end - entry.start)
    if len(raw) != entry.end - entry.start:
        raise CheckpointError(f"{header.path}: {label}: the file ended inside its data")
    if crc32 is not None and zlib.crc32(raw) != crc32:
        raise CheckpointError(
            f"{header.path}: {label} fails its checksum (crc32 {zlib.crc32(raw):#010x}, the "
            f"manifest says {crc32:#010x}): the file is corrupt"
        )
    if entry.dtype == "BOOL" and raw and np.frombuffer(raw, np.uint8).max() > 1:
        raise CheckpointError(f"{header.path}: {label} is BOOL but holds bytes other than 0 and 1")
    data = np.frombuffer(raw, dtype=DTYPES[entry.dtype])
    if sys.byteorder == "big":
        data = data.byteswap()
    return data.reshape(entry.shape)
