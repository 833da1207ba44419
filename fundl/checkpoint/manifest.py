"""The manifest: a pytree's containers and leaves as JSON, and the tree again.

:func:`encode` turns a pytree into manifest nodes and the arrays to store; :func:`parse`
checks the manifest of a file against its header (and bounds what a hostile file can
ask for); :func:`decode` rebuilds the tree without a template (to fill a template
instead, see :mod:`fundl.checkpoint.template`). Errors say the file and the problem;
the public functions add their own name.
"""

from __future__ import annotations

import collections
import functools
import json
import keyword
import math
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from fundl._validate import is_key
from fundl.checkpoint.errors import CheckpointError
from fundl.checkpoint.format import DTYPE_CODES, MAX_RANK, Header, clip, parse_json

__all__ = [
    "CHECKSUM_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_KEY",
    "MAX_CLASSES",
    "MAX_DEPTH",
    "MAX_FIELDS",
    "Manifest",
    "check_json",
    "decode",
    "encode",
    "header_metadata",
    "leaf_names",
    "max_nodes",
    "parse",
    "select",
    "show",
    "standin_namedtuple",
    "tensor_name",
]

FORMAT = "fundl.checkpoint"
FORMAT_VERSION = 2  # 2: a CRC-32 per tensor; 1 (read too): none
MANIFEST_KEY = "fundl"  # the manifest's key in the header's __metadata__
CHECKSUM_KEY = "fundl.crc32"  # the manifest's CRC-32 there (8 hex digits; version 2 on)
ROOT_NAME = "(root)"

# What a manifest may ask for: generous multiples of what real trees need.
MAX_DEPTH = 100  # containers nested inside each other
MAX_FIELDS = 1000  # fields of one NamedTuple
MAX_CLASSES = 256  # distinct NamedTuple classes in one file


def max_nodes(n_tensors: int) -> int:
    """The most tree nodes (containers, leaves and ``None``) a file of ``n_tensors`` may hold."""
    return 16 * n_tensors + 10_000


class Manifest(NamedTuple):
    """A checked manifest."""

    version: int
    tree: dict  # the root node
    leaves: dict[str, dict]  # tensor name -> {"path", "dtype", "shape", ["key_impl"], ["crc32"]}
    metadata: dict  # the user's metadata
    fields: dict  # the whole manifest object (with what the manager adds: step, metrics, ...)


# --- names ----------------------------------------------------------------------------


def _entry_key(entry: Any) -> Any:
    """The raw key of one key-path entry: a dict key, an index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def _escape(component: str) -> str:
    return component.replace("~", "~0").replace("/", "~1")


def tensor_name(path: tuple) -> str:
    """``params/dense1/W`` for the key path ``['params']['dense1']['W']``."""
    if not path:
        return ROOT_NAME
    return "/".join(_escape(str(_entry_key(entry))) for entry in path)


def show(keystr: str) -> str:
    """A key path for a message: ``(root)`` for the empty one."""
    return keystr or "(root)"


# --- encoding a tree ------------------------------------------------------------------


def _children(x: Any) -> tuple[list, bool]:
    """One level of ``x``: ``[(key entry, child), ...]`` and whether ``x`` is a leaf."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda node: node is not x)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # empty containers have no leaves
        return [], True
    return [(path[0], child) for path, child in flat], False


def _leaf_data(where: str, leaf: Any) -> tuple[np.ndarray, dict]:
    """The array to store for one leaf and its manifest entry (the checksum comes later)."""
    info: dict[str, Any] = {"path": where}
    if is_key(leaf):
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
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"{show(where)} is a traced value (save called inside jit, grad or vmap); "
                "save the arrays outside the transformed function"
            )
        if isinstance(leaf, jax.Array) and leaf.is_deleted():
            raise ValueError(
                f"{show(where)} is a deleted array (donated to a jitted step, which freed "
                "it); save the arrays the step returned"
            )
        data = np.asarray(leaf)
    else:
        raise TypeError(
            f"{show(where)} is a {type(leaf).__name__}; a checkpoint holds arrays, "
            "typed PRNG keys and Python bool, int and float leaves"
        )
    if data.dtype.name not in DTYPE_CODES:
        raise TypeError(
            f"{show(where)} has dtype {data.dtype.name}, which safetensors cannot store; "
            f"supported dtypes: {', '.join(DTYPE_CODES)}"
        )
    if data.ndim > MAX_RANK:
        raise ValueError(
            f"{show(where)} has {data.ndim} dimensions; a checkpoint holds at most {MAX_RANK}"
        )
    info.update(dtype=data.dtype.name, shape=list(data.shape))
    return data, info


class _Encoding:
    """What encoding a tree collects: the leaves, and counts checked against the limits."""

    def __init__(self) -> None:
        self.leaves: dict[str, tuple[np.ndarray, dict]] = {}
        self.nodes = 0
        self.classes: set[tuple] = set()


def _encode(x: Any, path: tuple, depth: int, out: _Encoding) -> dict:
    out.nodes += 1
    if x is None:
        return {"type": "none"}
    children, is_leaf = _children(x)
    where = jax.tree_util.keystr(path)
    if is_leaf:
        tensor = tensor_name(path)
        if tensor == "__metadata__":
            raise ValueError(
                f"{where} would be stored as '__metadata__', a name safetensors reserves"
            )
        if tensor in out.leaves:
            raise ValueError(
                f"{where} and {show(out.leaves[tensor][1]['path'])} both get the "
                f"tensor name {tensor!r}"
            )
        out.leaves[tensor] = _leaf_data(where, x)
        return {"type": "leaf", "name": tensor}
    if children and depth >= MAX_DEPTH:
        raise ValueError(
            f"{show(where)} holds containers nested {depth + 1} deep; a checkpoint holds at "
            f"most {MAX_DEPTH} levels"
        )
    keys = [_entry_key(entry) for entry, _ in children]
    cls = f"{type(x).__module__}.{type(x).__qualname__}"
    if isinstance(x, dict) and all(isinstance(e, jax.tree_util.DictKey) for e, _ in children):
        for key in keys:
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f"{show(where)} has the dict key {key!r}; checkpoint dict keys must be str "
                    "or int"
                )
        node = {"type": "dict", "keys": keys}
    elif type(x) in (list, tuple):
        node = {"type": type(x).__name__}
    elif isinstance(x, tuple) and hasattr(type(x), "_fields"):
        if len(x._fields) > MAX_FIELDS:
            raise ValueError(
                f"{show(where)} is a {cls} of {len(x._fields)} fields; a checkpoint holds "
                f"NamedTuples of at most {MAX_FIELDS}"
            )
        out.classes.add((cls, tuple(x._fields)))
        node = {"type": "namedtuple", "class": cls, "fields": list(x._fields)}
    else:
        keys = [k if isinstance(k, (str, int)) else str(k) for k in keys]
        node = {"type": "node", "class": cls, "keys": keys}
    node["children"] = [
        _encode(child, path + (entry,), depth + 1, out) for entry, child in children
    ]
    if len(set(keys)) != len(keys):  # a dict restored without a template would lose a child
        raise ValueError(f"{show(where)}, a {cls}, has children whose keys print alike: {keys}")
    return node


def encode(tree: Any) -> tuple[dict, dict[str, tuple[np.ndarray, dict]]]:
    """The manifest's root node for ``tree``, and ``{tensor name: (array, leaf entry)}``.

    Raises ``TypeError`` for a leaf a checkpoint cannot hold and ``ValueError`` for a
    tree beyond the limits :func:`parse` sets (so whatever is saved can be read).
    """
    out = _Encoding()
    root = _encode(tree, (), 0, out)
    if len(out.classes) > MAX_CLASSES:
        raise ValueError(
            f"the tree holds {len(out.classes)} distinct NamedTuple classes; a checkpoint "
            f"holds at most {MAX_CLASSES}"
        )
    if out.nodes > max_nodes(len(out.leaves)):
        raise ValueError(
            f"the tree has {out.nodes} nodes for {len(out.leaves)} arrays; a checkpoint holds "
            f"at most {max_nodes(len(out.leaves))} (16 per array and 10000 more)"
        )
    return root, out.leaves


def header_metadata(manifest: dict) -> dict[str, str]:
    """The header's ``__metadata__`` for ``manifest``: its JSON text and that text's CRC-32."""
    text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
    return {MANIFEST_KEY: text, CHECKSUM_KEY: f"{zlib.crc32(text.encode()):08x}"}


# --- metadata -------------------------------------------------------------------------


def check_json(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` that JSON cannot hold."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value}, which JSON cannot hold")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has the key {key!r}; JSON object keys must be str")
            check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which is not JSON-serializable "
        "(convert it with int(), float(), str() or .tolist())"
    )


# --- reading a manifest ---------------------------------------------------------------


def _is_count(x: Any) -> bool:
    return type(x) is int and x >= 0


def _check_leaves(
    fail: Callable[[str], CheckpointError], leaves: dict, header: Header, version: int
) -> None:
    paths: dict[str, str] = {}
    expected = "{'path': str, 'dtype': str, 'shape': [int >= 0, ...]"
    expected += ", 'crc32': int}" if version >= 2 else "}"
    for tensor, info in leaves.items():
        if tensor not in header.tensors:
            raise fail(
                f"the manifest lists tensor {clip(tensor, 80)!r} but the file does not hold it"
            )
        ok = (
            isinstance(info, dict)
            and isinstance(info.get("path"), str)
            and isinstance(info.get("dtype"), str)
            and isinstance(info.get("shape"), list)
            and all(_is_count(n) for n in info["shape"])
            and isinstance(info.get("key_impl", ""), str)
        )
        if ok and version >= 2:
            crc = info.get("crc32")
            ok = type(crc) is int and 0 <= crc < 2**32
        if not ok:
            raise fail(
                f"the manifest entry of tensor {clip(tensor, 80)!r} is malformed: "
                f"{clip(repr(info))}; expected {expected}"
            )
        entry, shape = header.tensors[tensor], tuple(info["shape"])
        if "key_impl" in info:
            # a key of shape s is stored as its key data: uint32 of shape s + (words,)
            consistent = (
                entry.dtype == "U32"
                and len(entry.shape) == len(shape) + 1
                and entry.shape[:-1] == shape
            )
        else:
            consistent = DTYPE_CODES.get(info["dtype"]) == entry.dtype and entry.shape == shape
        if not consistent:
            raise fail(
                f"tensor {clip(tensor, 80)!r} is {entry.dtype} {list(entry.shape)} but the "
                f"manifest says {clip(info['dtype'], 40)} {clip(str(info['shape']), 80)}"
            )
        if info["path"] in paths:
            raise fail(
                f"tensors {paths[info['path']]!r} and {clip(tensor, 80)!r} have the same key "
                f"path {clip(info['path'], 80)}"
            )
        paths[info["path"]] = tensor
    for tensor in header.tensors:
        if tensor not in leaves:
            raise fail(
                f"the file holds tensor {clip(tensor, 80)!r}, which the manifest does not list"
            )


class _Walk:
    """What checking a tree collects: the leaves placed, node count, NamedTuple classes."""

    def __init__(self, leaves: dict) -> None:
        self.leaves = leaves
        self.placed: set[str] = set()
        self.nodes = 0
        self.limit = max_nodes(len(leaves))
        self.classes: set[tuple] = set()


_CONTAINERS = {"dict": "keys", "node": "keys", "namedtuple": "fields", "list": None, "tuple": None}


def _child_path(where: str, kind: str, labels: list | None, i: int) -> str:
    if kind == "namedtuple":
        return f"{where}.{labels[i]}"
    return f"{where}[{labels[i]!r}]" if labels is not None else f"{where}[{i}]"


def _check_node(
    fail: Callable[[str], CheckpointError], node: Any, where: str, depth: int, walk: _Walk
) -> None:
    walk.nodes += 1
    if walk.nodes > walk.limit:
        raise fail(
            f"the manifest's tree has more than {walk.limit} nodes for {len(walk.leaves)} "
            "tensors (a checkpoint holds at most 16 per tensor and 10000 more)"
        )

    def bad(problem: str) -> CheckpointError:
        return fail(f"the manifest's tree node at {show(where)} is malformed: {problem}")

    kind = node.get("type") if isinstance(node, dict) else None
    if not isinstance(kind, str):
        raise bad(f"expected an object with a 'type', got {clip(repr(node))}")
    if kind == "none":
        return
    if kind == "leaf":
        name = node.get("name")
        if not isinstance(name, str) or name not in walk.leaves:
            raise bad(f"leaf names tensor {clip(repr(name), 80)}, which the manifest does not list")
        if name in walk.placed:
            raise bad(f"tensor {clip(name, 80)!r} is placed twice in the tree")
        walk.placed.add(name)
        return
    if kind not in _CONTAINERS:
        raise bad(
            f"unknown node type {clip(kind, 40)!r}; expected one of none, leaf, "
            f"{', '.join(_CONTAINERS)}"
        )
    children = node.get("children")
    if not isinstance(children, list):
        raise bad(f"'children' is {clip(repr(children), 80)}, not a list")
    label = _CONTAINERS[kind]
    labels = node.get(label) if label else None
    if label is not None:
        if not isinstance(labels, list):
            raise bad(f"{label!r} is {clip(repr(labels), 80)}, not a list")
        if len(labels) != len(children):
            raise bad(f"{label!r} has {len(labels)} entries but 'children' has {len(children)}")
        allowed = (str,) if kind == "namedtuple" else (str, int, bool)
        if not all(type(k) in allowed for k in labels):
            what = "strings" if kind == "namedtuple" else "strings or integers"
            raise bad(f"{label!r} must hold {what}, got {clip(repr(labels))}")
        if len(set(labels)) != len(labels):
            raise bad(f"{label!r} repeats an entry: {clip(repr(labels))}")
    if kind in ("namedtuple", "node") and not isinstance(node.get("class"), str):
        raise bad(f"'class' is {clip(repr(node.get('class')), 80)}, not a string")
    if kind == "namedtuple":
        _check_namedtuple(bad, node["class"], labels, walk)
    if children and depth >= MAX_DEPTH:
        raise fail(
            f"the manifest's tree nests containers more than {MAX_DEPTH} deep (at {clip(where)})"
        )
    for i, child in enumerate(children):
        _check_node(fail, child, _child_path(where, kind, labels, i), depth + 1, walk)


def _check_namedtuple(
    bad: Callable[[str], CheckpointError], cls: str, fields: list, walk: _Walk
) -> None:
    if len(fields) > MAX_FIELDS:
        raise bad(f"a NamedTuple of {len(fields)} fields; a checkpoint holds at most {MAX_FIELDS}")
    typename = cls.rsplit(".", 1)[-1]
    for word, what in [(typename, "class name")] + [(f, "field") for f in fields]:
        if not (isinstance(word, str) and word.isidentifier()) or keyword.iskeyword(word):
            raise bad(f"the NamedTuple {what} {clip(repr(word), 80)} is not a Python identifier")
        if what == "field" and word.startswith("_"):
            raise bad(f"the NamedTuple field {clip(word, 80)!r} starts with an underscore")
    walk.classes.add((cls, tuple(fields)))
    if len(walk.classes) > MAX_CLASSES:
        raise bad(f"more than {MAX_CLASSES} distinct NamedTuple classes in one file")


def parse(header: Header) -> Manifest:
    """The fundl manifest in ``header``'s ``__metadata__``, checked against the header.

    Checks: the manifest's CRC-32 (from version 2 on), its format and version; each leaf entry (path, dtype, shape, checksum) against
    its tensor's header entry; that every tensor is listed and placed exactly once in the
    tree; every tree node's fields; and the limits (:data:`MAX_DEPTH`, :data:`MAX_FIELDS`,
    :data:`MAX_CLASSES`, :func:`max_nodes`).

    Raises:
      CheckpointError: naming the file and the problem.
    """

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{header.path}: {problem}")

    text = header.metadata.get(MANIFEST_KEY)
    if text is None:
        raise fail(
            f"no fundl manifest (no {MANIFEST_KEY!r} entry in the header's __metadata__); "
            "a safetensors file from another tool can be read with safetensors.numpy.load_file"
        )
    crc = header.metadata.get(CHECKSUM_KEY)
    if crc is not None and crc != f"{zlib.crc32(text.encode()):08x}":
        raise fail(
            f"the fundl manifest fails its checksum (crc32 {zlib.crc32(text.encode()):08x}, the "
            f"header says {clip(crc, 20)}): the header is corrupt"
        )
    try:
        manifest = parse_json(text)
    except ValueError as e:
        raise fail(
            f"the fundl manifest is not a JSON object of format {FORMAT!r} ({clip(str(e))})"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise fail(f"the fundl manifest is not a JSON object of format {FORMAT!r}")
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        raise fail(f"format version {clip(repr(version), 40)} is not an integer >= 1")
    if version > FORMAT_VERSION:
        raise fail(
            f"format version {version} is newer than this fundl reads ({FORMAT_VERSION}); "
            "upgrade fundl"
        )
    if version >= 2 and crc is None:
        raise fail(
            f"no {CHECKSUM_KEY!r} entry in the header's __metadata__ (the manifest's CRC-32)"
        )
    for field in ("tree", "leaves", "metadata"):
        if not isinstance(manifest.get(field), dict):
            raise fail(f"the fundl manifest has no {field!r} object")
    _check_leaves(fail, manifest["leaves"], header, version)
    walk = _Walk(manifest["leaves"])
    _check_node(fail, manifest["tree"], "", 0, walk)
    for tensor in manifest["leaves"]:
        if tensor not in walk.placed:
            raise fail(
                f"the manifest lists tensor {clip(tensor, 80)!r} but its tree does not place it"
            )
    return Manifest(version, manifest["tree"], manifest["leaves"], manifest["metadata"], manifest)


# --- decoding -------------------------------------------------------------------------


@functools.lru_cache(maxsize=2 * MAX_CLASSES)
def standin_namedtuple(cls: str, fields: tuple[str, ...]) -> type:
    """A stand-in NamedTuple class for ``cls``, the same one for the same (class, fields)
    while it stays in this bounded cache, so trees restored one after the other compare equal.
    """
    return collections.namedtuple(cls.rsplit(".", 1)[-1], fields)


def decode(node: dict, arrays: dict[str, Any]) -> Any:
    """The tree of a checked manifest ``node``, its leaves taken from ``arrays`` by name."""
    classes: dict[tuple, type] = {}  # one class per (class, fields) within a tree

    def build(node: dict) -> Any:
        kind = node["type"]
        if kind == "none":
            return None
        if kind == "leaf":
            return arrays[node["name"]]
        children = [build(child) for child in node["children"]]
        if kind == "list":
            return children
        if kind == "tuple":
            return tuple(children)
        if kind == "namedtuple":
            key = (node["class"], tuple(node["fields"]))
            if key not in classes:
                classes[key] = standin_namedtuple(*key)
            return classes[key](*children)
        return dict(zip(node["keys"], children))  # "dict", and other containers by their keys

    return build(node)


def select(manifest: Manifest, key: str) -> dict | None:
    """The node of ``tree[key]`` when the saved tree is a dict holding ``key``, else ``None``."""
    root = manifest.tree
    if root["type"] != "dict" or key not in root["keys"]:
        return None
    return root["children"][root["keys"].index(key)]


def leaf_names(node: dict) -> list[str]:
    """The tensor names of the leaves under ``node``, in tree order."""
    names, stack = [], [node]
    while stack:
        node = stack.pop()
        if node["type"] == "leaf":
            names.append(node["name"])
        else:
            stack.extend(reversed(node.get("children", [])))
    return names
