"""Checkpoints: a pytree of arrays in one safetensors file, its structure in a JSON manifest.

A checkpoint is one file, ``<name>.safetensors``. Each leaf is a tensor named by its key
path (``params/dense1/W``, ``opt_state/mu/dense1/W``), so PyTorch, Hugging Face
and ``safetensors.numpy`` read the arrays by name. The header's ``__metadata__`` holds,
under the key ``"fundl"``, a JSON manifest: the format version, the tree's containers
(dicts, lists, tuples, NamedTuples, ``None``), each leaf's key path, dtype and shape,
which leaves are typed PRNG keys (and their implementation), and the user's metadata.
Nothing is pickled: loading a checkpoint never runs code from the file.

Names: the key-path entries (dict key, sequence index, attribute name) joined by ``/``,
each with ``~`` written ``~0`` and ``/`` written ``~1`` (JSON Pointer's escapes, RFC
6901), so distinct key paths get distinct names; a tree that is a single leaf is stored
as ``(root)``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import operator
import os
import pathlib
import re
import secrets
import struct
import sys
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save", "restore", "read_metadata", "CheckpointManager", "CheckpointError"]

FORMAT = "fundl.checkpoint"
FORMAT_VERSION = 1
_MANIFEST_KEY = "fundl"
_SUFFIX = ".safetensors"
_ROOT_NAME = "(root)"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the header length

# numpy dtype name -> safetensors dtype code
_CODES = {
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
_DTYPES = {code: jnp.dtype(name) for name, code in _CODES.items()}


class CheckpointError(ValueError):
    """A file that is not a readable fundl checkpoint: not safetensors, truncated, no manifest."""


# --- names ----------------------------------------------------------------------------


def _entry_key(entry: Any) -> Any:
    """The raw key of one key-path entry: a dict key, an index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _escape(component: str) -> str:
    return component.replace("~", "~0").replace("/", "~1")


def _tensor_name(path: tuple) -> str:
    """``params/dense1/W`` for the key path ``['params']['dense1']['W']``."""
    if not path:
        return _ROOT_NAME
    return "/".join(_escape(str(_entry_key(entry))) for entry in path)


def _show(keystr: str) -> str:
    return keystr or "(root)"


# --- encoding a tree ------------------------------------------------------------------


def _children(x: Any) -> tuple[list, bool]:
    """One level of ``x``: ``[(key entry, child), ...]`` and whether ``x`` is a leaf."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda node: node is not x)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # empty containers have no leaves
        return [], True
    return [(path[0], child) for path, child in flat], False


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _leaf_data(name: str, where: str, leaf: Any) -> tuple[np.ndarray, dict]:
    """The bytes to store for one leaf and its manifest entry."""
    info: dict[str, Any] = {"path": where}
    if _is_key(leaf):
        data = np.asarray(jax.random.key_data(leaf))
        info.update(
            dtype=str(leaf.dtype), shape=list(leaf.shape), key_impl=str(jax.random.key_impl(leaf))
        )
        return data, info
    if isinstance(leaf, bool):
        data = np.asarray(leaf, np.bool_)
    elif isinstance(leaf, int):
        data = np.asarray(leaf, np.int64)
    elif isinstance(leaf, float):
        data = np.asarray(leaf, np.float64)
    elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        data = np.asarray(leaf)
    else:
        raise TypeError(
            f"{name}: {_show(where)} is a {type(leaf).__name__}; a checkpoint holds arrays, "
            "typed PRNG keys and Python bool, int and float leaves"
        )
    if data.dtype.name not in _CODES:
        raise TypeError(
            f"{name}: {_show(where)} has dtype {data.dtype.name}, which safetensors cannot store; "
            f"supported dtypes: {', '.join(_CODES)}"
        )
    info.update(dtype=data.dtype.name, shape=list(data.shape))
    return data, info


def _encode(name: str, x: Any, path: tuple, leaves: dict) -> dict:
    """The manifest node for ``x``; its leaves go into ``leaves[tensor name] = (data, info)``."""
    if x is None:
        return {"type": "none"}
    children, is_leaf = _children(x)
    if is_leaf:
        tensor = _tensor_name(path)
        where = jax.tree_util.keystr(path)
        if tensor == "__metadata__":
            raise ValueError(
                f"{name}: {where} would be stored as '__metadata__', a name safetensors reserves"
            )
        if tensor in leaves:
            raise ValueError(
                f"{name}: {where} and {_show(leaves[tensor][1]['path'])} both get the "
                f"tensor name {tensor!r}"
            )
        leaves[tensor] = _leaf_data(name, where, x)
        return {"type": "leaf", "name": tensor}
    nodes = [_encode(name, child, path + (entry,), leaves) for entry, child in children]
    keys = [_entry_key(entry) for entry, _ in children]
    if isinstance(x, dict) and all(isinstance(e, jax.tree_util.DictKey) for e, _ in children):
        for key in keys:
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f"{name}: {_show(jax.tree_util.keystr(path))} has the dict key {key!r}; "
                    "checkpoint dict keys must be str or int"
                )
        return {"type": "dict", "keys": keys, "children": nodes}
    if type(x) in (list, tuple):
        return {"type": type(x).__name__, "children": nodes}
    cls = f"{type(x).__module__}.{type(x).__qualname__}"
    if isinstance(x, tuple) and hasattr(type(x), "_fields"):
        return {"type": "namedtuple", "class": cls, "fields": list(x._fields), "children": nodes}
    return {
        "type": "node",
        "class": cls,
        "keys": [k if isinstance(k, (str, int)) else str(k) for k in keys],
        "children": nodes,
    }


_NAMEDTUPLES: dict[tuple, type] = {}


def _namedtuple(cls: str, fields: list) -> type:
    """A stand-in NamedTuple class, one per (class, fields), so restored trees compare equal."""
    key = (cls, tuple(fields))
    if key not in _NAMEDTUPLES:
        _NAMEDTUPLES[key] = collections.namedtuple(cls.rsplit(".", 1)[-1], fields, rename=True)
    return _NAMEDTUPLES[key]


def _decode(node: dict, arrays: dict) -> Any:
    kind = node["type"]
    if kind == "none":
        return None
    if kind == "leaf":
        return arrays[node["name"]]
    children = [_decode(child, arrays) for child in node["children"]]
    if kind == "list":
        return children
    if kind == "tuple":
        return tuple(children)
    if kind == "namedtuple":
        return _namedtuple(node["class"], node["fields"])(*children)
    return dict(zip(node["keys"], children))  # "dict", and any other container by its keys


# --- metadata -------------------------------------------------------------------------


def _check_json(name: str, value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` that JSON cannot hold."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{name}: {where} is {value}, which JSON cannot hold")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(name, item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{name}: {where} has the key {key!r}; JSON object keys must be str"
                )
            _check_json(name, item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{name}: {where} is a {type(value).__name__}, which is not JSON-serializable "
        "(convert it with int(), float(), str() or .tolist())"
    )


def _encode_metric(value: float) -> float | str:
    """A metric as strict JSON: NaN and infinities become "nan", "inf", "-inf" strings."""
    return value if math.isfinite(value) else str(value)


# --- writing --------------------------------------------------------------------------


def _checkpoint_path(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    return p if p.name.endswith(_SUFFIX) else p.with_name(p.name + _SUFFIX)


def _little_endian(data: np.ndarray) -> np.ndarray:
    data = np.ascontiguousarray(data)
    if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big"):
        data = data.byteswap()
    return data.reshape(-1).view(np.uint8)


def _write_bytes(f: Any, data: Any) -> None:
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


def _atomic_write(target: pathlib.Path, chunks: list) -> None:
    """Write ``chunks`` to a temporary file beside ``target``, fsync, rename onto ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                _write_bytes(f, chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def _save(
    name: str, path: str | os.PathLike, tree: Any, metadata: dict | None, extra: dict
) -> pathlib.Path:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"{name}: metadata must be a dict, got {type(metadata).__name__}")
    _check_json(name, metadata, "metadata")
    leaves: dict[str, tuple[np.ndarray, dict]] = {}
    structure = _encode(name, tree, (), leaves)
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "jax_version": jax.__version__,
        "tree": structure,
        "leaves": {tensor: info for tensor, (_, info) in leaves.items()},
        "metadata": metadata,
        **extra,
    }
    header: dict[str, Any] = {
        "__metadata__": {
            _MANIFEST_KEY: json.dumps(manifest, separators=(",", ":"), allow_nan=False)
        }
    }
    # Widest items first, as safetensors' own writer does, so every tensor is aligned.
    order = sorted(leaves, key=lambda t: (-leaves[t][0].dtype.itemsize, t))
    chunks, offset = [], 0
    for tensor in order:
        data = leaves[tensor][0]
        header[tensor] = {
            "dtype": _CODES[data.dtype.name],
            "shape": list(data.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        chunks.append(_little_endian(data))
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    target = _checkpoint_path(path)
    _atomic_write(target, [struct.pack("<Q", len(text)) + text, *chunks])
    return target


def save(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None) -> pathlib.Path:
    """Write ``tree`` to ``path`` as one safetensors file, atomically.

    The file is written to a temporary file in the same directory, flushed and fsynced,
    then renamed onto ``path``: a crash mid-save leaves any previous checkpoint intact.

    Args:
      path: the file, with or without the ``.safetensors`` suffix; parent directories
        are created.
      tree: a pytree of arrays (any dtype safetensors stores, bfloat16 included), typed
        PRNG keys and Python bool/int/float leaves, in dicts (str or int keys), lists,
        tuples, NamedTuples and ``None``.
      metadata: a JSON-serializable dict kept in the manifest (tuples come back as lists).
    Returns: the path written, ending in ``.safetensors``.
    """
    return _save("save", path, tree, metadata, {})


# --- reading --------------------------------------------------------------------------


def _read_header(name: str, path: pathlib.Path) -> tuple[dict, dict, int]:
    """The safetensors header, the fundl manifest and the byte where the data starts.

    Checks everything that can be checked without reading the data, including that the
    file is long enough for every tensor's offsets.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{name}: {path}: {problem}")

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no checkpoint at {path}") from None
    with open(path, "rb") as f:
        if size < 8:
            raise fail(
                f"not a safetensors file: {size} bytes, fewer than the 8 that give the "
                "header length"
            )
        (length,) = struct.unpack("<Q", f.read(8))
        if length > _MAX_HEADER:
            raise fail(
                f"header length {length} is over safetensors' limit of {_MAX_HEADER}: "
                "not a safetensors file"
            )
        if length > size - 8:
            raise fail(
                f"header length {length} is larger than the file ({size} bytes): truncated, "
                "or not a safetensors file"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"header is not JSON ({e}): not a safetensors file") from None
    if not isinstance(header, dict):
        raise fail(
            f"header is JSON but not an object (a {type(header).__name__}): not a safetensors file"
        )
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or _MANIFEST_KEY not in meta:
        raise fail(
            f"no fundl manifest (no {_MANIFEST_KEY!r} entry in the header's __metadata__); "
            "a safetensors file from another tool can be read with safetensors.numpy.load_file"
        )
    try:
        manifest = json.loads(meta[_MANIFEST_KEY])
        ok = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    except (TypeError, json.JSONDecodeError):
        ok = False
    if not ok:
        raise fail(f"the fundl manifest is not a JSON object of format {FORMAT!r}")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > FORMAT_VERSION:
        raise fail(
            f"format version {manifest.get('version')!r} is newer than this fundl reads "
            f"({FORMAT_VERSION}); upgrade fundl"
        )
    for field in ("tree", "leaves", "metadata"):
        if not isinstance(manifest.get(field), dict):
            raise fail(f"the fundl manifest has no {field!r} object")
    data_start = 8 + length
    available = size - data_start
    for tensor, entry in header.items():
        if tensor == "__metadata__":
            continue
        try:
            start, end = (int(v) for v in entry["data_offsets"])
            dtype = entry["dtype"]
            shape = [int(n) for n in entry["shape"]]
        except (TypeError, KeyError, ValueError):
            raise fail(f"tensor {tensor!r} has a malformed header entry {entry!r}") from None
        if dtype not in _DTYPES:
            raise fail(f"tensor {tensor!r} has dtype {dtype!r}, which fundl cannot read")
        if end > available:
            raise fail(
                f"data shorter than the offsets say: tensor {tensor!r} ends at byte {end} of the "
                f"data but only {available} bytes follow the header (truncated?)"
            )
        if end - start != math.prod(shape) * _DTYPES[dtype].itemsize or start < 0:
            raise fail(
                f"tensor {tensor!r} spans bytes {start}..{end}, which does not fit its "
                f"dtype {dtype} and shape {shape}"
            )
    for tensor, info in manifest["leaves"].items():
        if tensor not in header:
            raise fail(f"the manifest lists tensor {tensor!r} but the file does not hold it")
        entry = header[tensor]
        fields = (("path", str), ("dtype", str), ("shape", list))
        if not (isinstance(info, dict) and all(isinstance(info.get(k), t) for k, t in fields)):
            raise fail(f"the manifest entry of tensor {tensor!r} is malformed: {info!r}")
        if "key_impl" in info:
            consistent = (
                entry["dtype"] == "U32" and entry["shape"][: len(info["shape"])] == info["shape"]
            )
        else:
            consistent = (
                _CODES.get(info["dtype"]) == entry["dtype"] and entry["shape"] == info["shape"]
            )
        if not consistent:
            raise fail(
                f"tensor {tensor!r} is {entry['dtype']} {entry['shape']} but the manifest says "
                f"{info['dtype']} {info['shape']}"
            )
    return header, manifest, data_start


def _read_arrays(
    path: pathlib.Path, header: dict, data_start: int, tensors: list
) -> dict[str, np.ndarray]:
    arrays = {}
    with open(path, "rb") as f:
        for tensor in tensors:
            entry = header[tensor]
            start, end = entry["data_offsets"]
            f.seek(data_start + start)
            data = np.frombuffer(f.read(end - start), dtype=_DTYPES[entry["dtype"]])
            if sys.byteorder == "big":
                data = data.byteswap()
            arrays[tensor] = data.reshape(entry["shape"])
    return arrays


def _to_jax(name: str, path: pathlib.Path, info: dict, data: np.ndarray) -> jax.Array:
    """A stored leaf as a JAX array (a typed key array for keys), under JAX's dtype rules."""
    if "key_impl" in info:
        return jax.random.wrap_key_data(jnp.asarray(data), impl=info["key_impl"])
    if data.dtype.itemsize == 8 and data.dtype.kind in "iu" and not jax.config.jax_enable_x64:
        narrow = np.int32 if data.dtype.kind == "i" else np.uint32
        if data.size and (data.min() < np.iinfo(narrow).min or data.max() > np.iinfo(narrow).max):
            raise ValueError(
                f"{name}: {path}: {_show(info['path'])} is {data.dtype} with values beyond "
                f"{np.dtype(narrow).name}, which JAX would wrap with jax_enable_x64 off; "
                "enable x64 or pass a template with a numpy leaf there"
            )
    return jnp.asarray(data)


_PY_SCALARS = {bool: "bool", int: "int", float: "float"}


def _kind(dtype: Any) -> str:
    """bool, int, float or complex: what a Python scalar or a weakly-typed array fixes."""
    if str(dtype).startswith("key<"):
        return str(dtype)
    dtype = jnp.dtype(dtype)
    for kind, family in (
        ("bool", jnp.bool_),
        ("int", jnp.integer),
        ("float", jnp.floating),
        ("complex", jnp.complexfloating),
    ):
        if jnp.issubdtype(dtype, family):
            return kind
    return dtype.name


def _check_leaf(name: str, path: pathlib.Path, where: str, info: dict, expected: Any) -> None:
    """Raise ``ValueError`` if the stored leaf ``info`` does not fit the template leaf.

    A Python scalar or a weakly-typed leaf (how ``jax.eval_shape`` sees a Python scalar)
    fixes only the kind (bool, int, float); any other leaf fixes the exact dtype.
    """
    shape, dtype = tuple(info["shape"]), info["dtype"]
    prefix = f"{name}: {path}: {_show(where)}"
    if type(expected) in _PY_SCALARS:
        kind, expected_shape = _PY_SCALARS[type(expected)], ()
        wanted_dtype = f"a Python {kind}"
        wanted_shape = f"a scalar ({wanted_dtype})"
    elif isinstance(expected, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        expected_shape, wanted_shape = tuple(expected.shape), str(tuple(expected.shape))
        kind = _kind(expected.dtype) if getattr(expected, "weak_type", False) else None
        wanted_dtype = (
            f"a weakly-typed {expected.dtype} (any {kind})" if kind else str(expected.dtype)
        )
    else:
        raise TypeError(
            f"{name}: the template's leaf at {_show(where)} is a {type(expected).__name__}; "
            "template leaves are arrays, jax.ShapeDtypeStruct or Python bool, int and float"
        )
    if shape != expected_shape:
        raise ValueError(f"{prefix} has shape {shape}, the template expects {wanted_shape}")
    if (_kind(dtype) != kind) if kind else (dtype != str(expected.dtype)):
        raise ValueError(f"{prefix} has dtype {dtype}, the template expects {wanted_dtype}")


def _like(name: str, path: pathlib.Path, info: dict, data: np.ndarray, expected: Any) -> Any:
    """A stored leaf as the template leaf's type: a Python scalar, numpy, or JAX on its sharding."""
    if type(expected) in _PY_SCALARS:
        return type(expected)(data.item())
    if isinstance(expected, np.ndarray):
        return data.copy()
    if isinstance(expected, np.generic):
        return data[()]
    if getattr(expected, "weak_type", False):
        cast = data.astype(expected.dtype)
        if _kind(data.dtype) == "int" and np.any(cast != data):
            raise ValueError(
                f"{name}: {path}: {_show(info['path'])} holds values beyond {expected.dtype}, "
                "the dtype of the template's weakly-typed leaf"
            )
        # From a Python number, jnp.asarray makes a weakly-typed array again.
        value = jnp.asarray(cast.item()) if cast.ndim == 0 else jnp.asarray(cast)
    else:
        value = _to_jax(name, path, info, data)
    sharding = getattr(expected, "sharding", None)
    return value if sharding is None else jax.device_put(value, sharding)


def _match_template(
    name: str, path: pathlib.Path, manifest: dict, template: Any
) -> tuple[list, Any]:
    """Pair each template leaf with its stored tensor, checking key paths, shapes and dtypes."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    wanted = [(jax.tree_util.keystr(p), leaf) for p, leaf in flat]
    stored = {info["path"]: tensor for tensor, info in manifest["leaves"].items()}
    for where, _ in wanted:
        if where not in stored:
            raise ValueError(
                f"{name}: {path}: the template has {_show(where)} but the checkpoint does not"
            )
    template_paths = {where for where, _ in wanted}
    for where in stored:
        if where not in template_paths:
            raise ValueError(
                f"{name}: {path}: the checkpoint has {_show(where)} but the template does not"
            )
    pairs = []
    for where, expected in wanted:
        tensor = stored[where]
        _check_leaf(name, path, where, manifest["leaves"][tensor], expected)
        pairs.append((tensor, expected))
    return pairs, treedef


def _restore(name: str, path: str | os.PathLike, template: Any) -> Any:
    path = _checkpoint_path(path)
    header, manifest, data_start = _read_header(name, path)
    leaves = manifest["leaves"]
    if template is None:
        arrays = _read_arrays(path, header, data_start, list(leaves))
        values = {t: _to_jax(name, path, leaves[t], data) for t, data in arrays.items()}
        return _decode(manifest["tree"], values)
    pairs, treedef = _match_template(name, path, manifest, template)
    arrays = _read_arrays(path, header, data_start, [tensor for tensor, _ in pairs])
    values = [_like(name, path, leaves[t], arrays[t], expected) for t, expected in pairs]
    return jax.tree.unflatten(treedef, values)


def restore(path: str | os.PathLike, template: Any = None) -> Any:
    """Read a checkpoint written by :func:`save`.

    Without a template, the saved containers come back (dicts, lists, tuples, ``None``;
    a NamedTuple as a stand-in NamedTuple with the same name and fields; any other
    registered container, such as a dataclass, as a dict of its children), with every
    leaf a JAX array under JAX's dtype rules (64-bit leaves become 32-bit unless
    ``jax_enable_x64`` is on; Python scalars come back as 0-d arrays) and typed PRNG
    keys as typed keys.

    With a template, the result has the template's exact structure and types. Each
    leaf is checked first: same key paths, same shape and dtype. A jax.Array or
    ``jax.ShapeDtypeStruct`` leaf gives a JAX array (placed on its sharding, when it
    has one), a numpy leaf a numpy array, a Python int/float/bool leaf a Python scalar.

    Args:
      path: the file, with or without the ``.safetensors`` suffix.
      template: ``None``, or a pytree of arrays, ``jax.ShapeDtypeStruct`` (e.g. from
        ``jax.eval_shape`` of an init function) and Python scalars.
    Returns: the restored tree.
    Raises:
      CheckpointError: the file is not a fundl checkpoint, or is truncated or corrupt.
      ValueError: the checkpoint does not fit the template; the message names the
        first key path that differs and the expected and found shape or dtype.
    """
    return _restore("restore", path, template)


def read_metadata(path: str | os.PathLike) -> dict:
    """The user metadata saved with a checkpoint, read from its header alone.

    Args:
      path: the file, with or without the ``.safetensors`` suffix.
    Returns: the ``metadata`` dict given to :func:`save` (``{}`` if none was).
    """
    path = _checkpoint_path(path)
    return _read_header("read_metadata", path)[1]["metadata"]


# --- step checkpoints -----------------------------------------------------------------

_STEP_FILE = re.compile(r"step_(\d+)\.safetensors")


class CheckpointManager:
    """Step checkpoints ``directory/step_00000042.safetensors``: the last few and the best.

    After each :meth:`save` the oldest checkpoints beyond ``keep_last`` are deleted,
    except the best one by ``metrics[monitor]`` and the one just written. The files are
    the only state (metrics live in each file's manifest), so a new manager on the same
    directory picks up where another left off.

    Args:
      directory: where the checkpoints live; created on the first save.
      keep_last: how many of the most recent steps to keep, at least 1.
      monitor: the metric that ranks checkpoints for :meth:`best_step`, or ``None``.
      mode: ``"min"`` (lower is better, e.g. a loss) or ``"max"`` (e.g. an accuracy).
        A NaN metric never counts as the best; ties go to the earlier step.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep_last: int = 3,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
    ):
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"CheckpointManager: keep_last must be an int >= 1, got {keep_last!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"CheckpointManager: mode must be one of 'min', 'max', got {mode!r}")
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(
                f"CheckpointManager: monitor must be a metric name (str) or None, got {monitor!r}"
            )
        self.directory = pathlib.Path(directory).expanduser()
        self.keep_last = keep_last
        self.monitor = monitor
        self.mode = mode

    def __repr__(self) -> str:
        return (
            f"CheckpointManager({str(self.directory)!r}, keep_last={self.keep_last}, "
            f"monitor={self.monitor!r}, mode={self.mode!r})"
        )

    def path(self, step: int) -> pathlib.Path:
        """The file of ``step``: ``directory/step_00000042.safetensors``."""
        return self.directory / f"step_{step:08d}{_SUFFIX}"

    def save(
        self, step: int, tree: Any, *, metrics: dict | None = None, metadata: dict | None = None
    ) -> pathlib.Path:
        """Save ``tree`` as ``step``, then delete checkpoints beyond ``keep_last`` (never the best).

        Args:
          step: the training step, an int >= 0 (an existing step is overwritten).
          tree: the pytree to save, as for :func:`save`.
          metrics: ``{name: number}``, stored in the manifest; ``metrics[monitor]``
            ranks the checkpoint for :meth:`best_step`.
          metadata: a JSON-serializable dict, as for :func:`save`.
        Returns: the path written.
        """
        name = "CheckpointManager.save"
        try:
            index = operator.index(step)
        except TypeError:
            index = -1
        if index < 0:
            raise ValueError(f"{name}: step must be an int >= 0, got {step!r}")
        step = index
        stored = {}
        for key, value in (metrics or {}).items():
            if not isinstance(key, str):
                raise TypeError(f"{name}: metric names must be str, got {key!r}")
            try:
                stored[key] = _encode_metric(float(value))
            except (TypeError, ValueError):
                raise TypeError(
                    f"{name}: metrics[{key!r}] must be a number, got {value!r}"
                ) from None
        if metrics is not None and self.monitor is not None and self.monitor not in metrics:
            raise ValueError(
                f"{name}: metrics has no {self.monitor!r} (the monitor); got {sorted(metrics)}"
            )
        written = _save(name, self.path(step), tree, metadata, {"step": step, "metrics": stored})
        self._prune(just_saved=step)
        return written

    def _prune(self, *, just_saved: int) -> None:
        steps = self.steps()
        keep = set(steps[-self.keep_last :]) | {just_saved, self.best_step()}
        for step in steps:
            if step not in keep:
                self.path(step).unlink(missing_ok=True)

    def steps(self) -> list[int]:
        """The steps with a checkpoint in the directory, ascending."""
        if not self.directory.is_dir():
            return []
        found = (_STEP_FILE.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_step(self) -> int | None:
        """The highest step saved, or ``None`` if there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    def metrics(self, step: int) -> dict[str, float]:
        """The metrics saved with ``step`` (``{}`` if none were)."""
        path = self._existing(step, "CheckpointManager.metrics")
        manifest = _read_header("CheckpointManager.metrics", path)[1]
        return {k: float(v) for k, v in manifest.get("metrics", {}).items()}

    def best_step(self) -> int | None:
        """The step with the best ``metrics[monitor]``, or ``None`` (no monitor, or no step has it).

        Lowest for mode ``"min"``, highest for ``"max"``; NaN never counts, ties go to
        the earlier step.
        """
        if self.monitor is None:
            return None
        best, best_value = None, None
        for step in self.steps():
            value = self.metrics(step).get(self.monitor)
            if value is None or math.isnan(value):
                continue
            better = best_value is None or (
                value < best_value if self.mode == "min" else value > best_value
            )
            if better:
                best, best_value = step, value
        return best

    def _existing(self, step: int, name: str) -> pathlib.Path:
        path = self.path(step)
        if not path.is_file():
            raise FileNotFoundError(
                f"{name}: no checkpoint for step {step} in {self.directory}; steps: {self.steps()}"
            )
        return path

    def restore(self, step: int | None = None, template: Any = None) -> Any:
        """Restore ``step`` (default: the latest) as :func:`restore` does, template optional."""
        name = "CheckpointManager.restore"
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"{name}: no checkpoints in {self.directory}")
        return _restore(name, self._existing(step, name), template)

    def restore_best(self, template: Any = None) -> Any:
        """Restore the checkpoint of :meth:`best_step`, with an optional template."""
        name = "CheckpointManager.restore_best"
        if self.monitor is None:
            raise ValueError(f"{name}: no monitor; build the manager with monitor='<metric name>'")
        step = self.best_step()
        if step is None:
            raise FileNotFoundError(
                f"{name}: no checkpoint in {self.directory} has the metric {self.monitor!r}"
            )
        return _restore(name, self._existing(step, name), template)

    def read_metadata(self, step: int) -> dict:
        """The user metadata saved with ``step``."""
        name = "CheckpointManager.read_metadata"
        return _read_header(name, self._existing(step, name))[1]["metadata"]
