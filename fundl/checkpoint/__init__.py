"""Checkpoints: a pytree of arrays in one safetensors file, its structure in a JSON manifest.

A checkpoint is one file, ``<name>.safetensors``. Each leaf is a tensor named by its key
path (``params/dense1/W``, ``opt_state/mu/dense1/W``), so PyTorch, Hugging Face
and ``safetensors.numpy`` read the arrays by name. The header's ``__metadata__`` holds,
under the key ``"fundl"``, a JSON manifest (and under ``"fundl.crc32"`` its CRC-32): the
format version (2; files of version 1 are read too), the tree's containers (dicts,
lists, tuples, NamedTuples, ``None``), each leaf's key path, dtype, shape and the CRC-32
of its bytes (verified on every read: they detect corruption, not tampering), which
leaves are typed PRNG keys (and their implementation), and the user's metadata. Nothing
is pickled: loading a checkpoint never runs code from the file, and a malformed or
hostile file raises :class:`CheckpointError`.

Names: the key-path entries (dict key, sequence index, attribute name) joined by ``/``,
each with ``~`` written ``~0`` and ``/`` written ``~1`` (JSON Pointer's escapes, RFC
6901), so distinct key paths get distinct names; a tree that is a single leaf is stored
as ``(root)``.

Modules: :mod:`~fundl.checkpoint.format` (the safetensors container, checksums, atomic
writes), :mod:`~fundl.checkpoint.manifest` (pytree to manifest and back, the limits),
:mod:`~fundl.checkpoint.template` (stored leaves as arrays, filling a template),
:mod:`~fundl.checkpoint.io` (``save``, ``restore``, ``read_metadata``) and
:mod:`~fundl.checkpoint.manager` (step checkpoints of a run).
"""

from fundl.checkpoint.errors import CheckpointError
from fundl.checkpoint.io import read_metadata, restore, save
from fundl.checkpoint.manager import CheckpointManager, restore_params
from fundl.checkpoint.manifest import FORMAT as FORMAT
from fundl.checkpoint.manifest import FORMAT_VERSION as FORMAT_VERSION

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "read_metadata",
    "restore",
    "restore_params",
    "save",
]
