"""``save``, ``restore``, ``read_metadata``: one pytree to one file and back.

The public functions check their arguments and name themselves in errors;
:func:`write_checkpoint`, :func:`read_checkpoint` and :func:`read_manifest` do the work
for them and for :mod:`fundl.checkpoint.manager`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax

from fundl._validate import check_bool
from fundl.checkpoint import manifest
from fundl.checkpoint.errors import named
from fundl.checkpoint.format import (
    checkpoint_path,
    clip,
    encode_tensor,
    open_file,
    read_header,
    read_tensor,
    write_file,
)
from fundl.checkpoint.template import like, match_template, to_jax

__all__ = [
    "read_checkpoint",
    "read_manifest",
    "read_metadata",
    "restore",
    "save",
    "write_checkpoint",
]


def write_checkpoint(
    path: Any, tree: Any, *, metadata: dict | None = None, extra: dict | None = None
) -> pathlib.Path:
    """Write ``tree`` to ``path`` (suffix added) with ``metadata``; ``extra`` joins the manifest.

    Returns:
      the path written.
    """
    target = checkpoint_path(path)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    manifest.check_json(metadata, "metadata")
    root, leaves = manifest.encode(tree)
    tensors = {}
    for name, (data, info) in leaves.items():
        tensors[name] = encode_tensor(data)
        info["crc32"] = tensors[name].crc32
    content = {
        "format": manifest.FORMAT,
        "version": manifest.FORMAT_VERSION,
        "jax_version": jax.__version__,
        "tree": root,
        "leaves": {name: info for name, (_, info) in leaves.items()},
        "metadata": metadata,
        **(extra or {}),
    }
    write_file(target, tensors, manifest.header_metadata(content))
    return target


def read_manifest(path: pathlib.Path) -> manifest.Manifest:
    """The checked manifest of the checkpoint at ``path``, from its header alone."""
    with open_file(path) as f:
        return manifest.parse(read_header(f, path))


def read_checkpoint(
    path: pathlib.Path, template: Any = None, *, partial: bool = False, key: str | None = None
) -> Any:
    """Read the checkpoint at ``path``; every tensor read is verified against its checksum.

    Args:
      template: ``None`` or a pytree to fill (see :func:`restore`).
      partial: with a template, read only the template's leaves.
      key: without a template, read only ``tree[key]`` of a saved dict (``None``: all).
    """
    with open_file(path) as f:
        header = read_header(f, path)
        content = manifest.parse(header)

        def read(tensor: str) -> Any:
            info = content.leaves[tensor]
            return read_tensor(f, header, tensor, crc32=info.get("crc32"), where=info["path"])

        if template is None:
            node = content.tree
            if key is not None:
                node = manifest.select(content, key)
                if node is None:
                    top = content.tree.get("keys", [])
                    raise ValueError(
                        f"{path}: the saved tree holds no {key!r} entry at its top level "
                        f"(it holds {clip(repr(top))})"
                    )
            arrays = {
                t: to_jax(path, content.leaves[t], read(t)) for t in manifest.leaf_names(node)
            }
            return manifest.decode(node, arrays)
        pairs, treedef = match_template(path, content, template, partial=partial)
        values = [like(path, content.leaves[t], read(t), expected) for t, expected in pairs]
        return jax.tree.unflatten(treedef, values)


def save(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None) -> pathlib.Path:
    """Write ``tree`` to ``path`` as one safetensors file, atomically.

    The file is written to a temporary file in the same directory, flushed and fsynced,
    then renamed onto ``path``: a crash mid-save leaves any previous checkpoint intact.
    Temporary files that killed saves of ``path`` left behind are removed first.

    Args:
      path: the file, with or without the ``.safetensors`` suffix; parent directories
        are created.
      tree: a pytree of arrays (any dtype safetensors stores, bfloat16 included), typed
        PRNG keys and Python bool/int/float leaves, in dicts (str or int keys), lists,
        tuples, NamedTuples and ``None``.
      metadata: a JSON-serializable dict kept in the manifest (tuples come back as lists).

    Returns:
      the path written, ending in ``.safetensors``.

    Raises:
      TypeError: a leaf or metadata entry a checkpoint cannot hold, or a traced leaf
        (``save`` inside ``jit``); the message names it.
      ValueError: a tree beyond the limits of :mod:`fundl.checkpoint.manifest`, or a leaf
        that a jitted step was donated and deleted; the message names it.
      OSError: writing failed (a full disk, say): same errno, the message names the path.

    Examples:
      >>> import os, tempfile
      >>> tree = {"params": {"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}, "step": 7}
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = fundl.checkpoint.save(os.path.join(d, "ckpt"), tree, metadata={"epoch": 3})
      ...     back = fundl.checkpoint.restore(path)
      >>> path.name, jax.tree.map(lambda leaf: leaf.shape, back)
      ('ckpt.safetensors', {'params': {'W': (2, 3), 'b': (2,)}, 'step': ()})
    """
    with named("save"):
        return write_checkpoint(path, tree, metadata=metadata)


def restore(path: str | os.PathLike, template: Any = None, *, partial: bool = False) -> Any:
    """Read a checkpoint written by :func:`save`, verifying every tensor's checksum.

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
      partial: the template may hold only part of the saved tree (``{"params": ...}`` of
        a training checkpoint): each of its leaves must be in the file, and the file's
        other leaves are not read.

    Returns:
      the restored tree.

    Raises:
      CheckpointError: the file is not a fundl checkpoint, or is malformed, truncated or
        corrupt (a tensor fails its checksum); the message names the file.
      ValueError: the checkpoint does not fit the template; the message names the
        first key path that differs and the expected and found shape or dtype.
      FileNotFoundError: there is no file at ``path``.

    Examples:
      The params alone, checked against a template of shapes, then a template that
      does not fit:

      >>> import os, tempfile
      >>> params = {"W": jnp.ones((2, 3)), "b": jnp.zeros(2)}
      >>> shapes = jax.eval_shape(lambda: params)  # jax.ShapeDtypeStruct leaves
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = fundl.checkpoint.save(os.path.join(d, "ckpt"), {"params": params, "step": 7})
      ...     back = fundl.checkpoint.restore(path, {"params": shapes}, partial=True)
      ...     try:
      ...         fundl.checkpoint.restore(path, {"params": {"W": jnp.ones((3, 3))}}, partial=True)
      ...     except ValueError as error:
      ...         print(error)  # doctest: +ELLIPSIS
      restore: ...ckpt.safetensors: ['params']['W'] has shape (2, 3), the template expects (3, 3)
      >>> back["params"]["W"].shape, back["params"]["W"].dtype
      ((2, 3), dtype('float32'))
    """
    check_bool("restore", "partial", partial)
    if partial and template is None:
        raise ValueError("restore: partial=True needs a template (the leaves to read)")
    with named("restore"):
        return read_checkpoint(checkpoint_path(path), template, partial=partial)


def read_metadata(path: str | os.PathLike) -> dict:
    """The user metadata saved with a checkpoint, read from its header alone.

    Args:
      path: the file, with or without the ``.safetensors`` suffix.

    Returns:
      the ``metadata`` dict given to :func:`save` (``{}`` if none was).

    Examples:
      >>> import os, tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     path = fundl.checkpoint.save(os.path.join(d, "ckpt"), {"W": jnp.ones(2)},
      ...                                  metadata={"epoch": 3, "lr": 0.1})
      ...     print(fundl.checkpoint.read_metadata(path))
      {'epoch': 3, 'lr': 0.1}
    """
    with named("read_metadata"):
        return read_manifest(checkpoint_path(path)).metadata
