"""Fixtures shared by the checkpoint tests: a small model's params, and header surgery."""

import json
import struct
import zlib

import jax
import jax.numpy as jnp
import pytest

import fundl


@pytest.fixture
def params():
    return fundl.nn.mlp([2, 4, 3]).init(jax.random.key(0))  # dense1 W (4, 2), dense2 W (3, 4)


@pytest.fixture
def adam_state(params):
    """Adam's state for ``params`` after three steps: a NamedTuple with a count and moments."""
    opt = fundl.optim.adam(1e-3)
    state = opt.init(params)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    for _ in range(3):
        _, state = opt.update(grads, state, params)
    return state


def _read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def _rewrite_header(path, edit):
    """Replace the header of a saved checkpoint with ``edit(header)``, keeping the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = edit(json.loads(raw[8 : 8 + n]))
    text = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _manifest_edit(edit):
    """A header edit that applies ``edit(manifest)`` in place.

    An edit that leaves only ``{"__text__": text}`` replaces the manifest by ``text``. The
    manifest's checksum is recomputed, so the file reaches the checks of its contents.
    """

    def on_header(header):
        manifest = json.loads(header["__metadata__"]["fundl"])
        edit(manifest)
        text = manifest["__text__"] if list(manifest) == ["__text__"] else json.dumps(manifest)
        header["__metadata__"]["fundl"] = text
        if "fundl.crc32" in header["__metadata__"]:  # a crafted file carries a valid checksum
            header["__metadata__"]["fundl.crc32"] = f"{zlib.crc32(text.encode()):08x}"
        return header

    return on_header


@pytest.fixture
def read_header():
    """``read_header(path)``: a checkpoint's safetensors header as JSON."""
    return _read_header


@pytest.fixture
def rewrite_header():
    """``rewrite_header(path, edit)``: replace the header with ``edit(header)``, keep the data."""
    return _rewrite_header


@pytest.fixture
def rewrite_manifest():
    """``rewrite_manifest(path, edit)``: apply ``edit(manifest)`` to the manifest, in place."""
    return lambda path, edit: _rewrite_header(path, _manifest_edit(edit))
