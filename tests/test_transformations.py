"""Which JAX transformations work in each mode: the table in docs/gradient-verification.md.

Each row of that table is run here in both modes; a "yes" must give the reference mode's
values, a "no" must raise. So the documentation cannot drift from the code.
"""

import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import pytest

import fundl
from fundl import losses

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "gradient-verification.md").read_text()

_MODEL = fundl.mlp([3, 4, 2], "tanh")
_PARAMS = _MODEL.init(jax.random.key(0))
_X = jax.random.normal(jax.random.key(1), (5, 3))
_Y = jnp.array([0, 1, 1, 0, 1])
_V = jax.tree.map(jnp.ones_like, _PARAMS)


def _loss(params):
    return losses.softmax_cross_entropy(_MODEL.apply(params, _X), _Y)


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _scan(params):
    def body(carry, x):
        return carry + _loss(jax.tree.map(lambda p: p * x, params)), None

    return jax.grad(lambda p: jax.lax.scan(body, 0.0, jnp.array([1.0, 0.5]))[0])(params)


TRANSFORMATIONS = {
    "`jax.grad`": lambda: jax.grad(_loss)(_PARAMS),
    "`jax.vjp`": lambda: jax.vjp(_loss, _PARAMS)[1](jnp.ones(())),
    "`jax.jacrev`": lambda: jax.jacrev(_loss)(_PARAMS),
    "grad of grad": lambda: jax.grad(lambda p: _vdot(jax.grad(_loss)(p), _V))(_PARAMS),
    "`jax.hessian`": lambda: jax.jit(jax.hessian(_loss))(_PARAMS),
    "`jax.jvp`": lambda: jax.jvp(_loss, (_PARAMS,), (_V,)),
    "`jax.jacfwd`": lambda: jax.jacfwd(_loss)(_PARAMS),
    "`jax.linearize`": lambda: jax.linearize(_loss, _PARAMS)[1](_V),
    "`jax.vmap`": lambda: jax.vmap(lambda x: _MODEL.apply(_PARAMS, x))(_X[:, None]),
    "`jax.jit`": lambda: jax.jit(jax.grad(_loss))(_PARAMS),
    "`jax.lax.scan`": lambda: _scan(_PARAMS),
}


def _table():
    section = PAGE.split("## Which transformations each mode supports", 1)[1]
    rows = re.findall(r"^\| (.+?) \| (yes|no)\b[^|]*\| (yes|no)\b[^|]*\|$", section, re.M)
    return {name: (hand == "yes", ref == "yes") for name, hand, ref in rows}


def test_the_table_lists_every_transformation_tested_here():
    assert set(_table()) == set(TRANSFORMATIONS)


@pytest.mark.parametrize("name", sorted(TRANSFORMATIONS))
@pytest.mark.usefixtures("highest_precision")  # two computations of a float32 result agree
def test_each_transformation_behaves_as_the_table_says(name):
    hand_ok, reference_ok = _table()[name]
    assert reference_ok  # the references are plain jax.numpy: everything works
    with fundl.reference_mode():
        expected = TRANSFORMATIONS[name]()
    if hand_ok:
        chex.assert_trees_all_close(TRANSFORMATIONS[name](), expected, rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(TypeError, match="forward-mode autodiff"):
            TRANSFORMATIONS[name]()


@pytest.mark.parametrize("name", ["`jax.jvp`", "`jax.jacfwd`"])
def test_forward_mode_error_says_what_to_do(name):
    with pytest.raises(TypeError, match=r"fundl\.reference_mode\(\).*") as info:
        TRANSFORMATIONS[name]()
    assert "jax.jacrev" in str(info.value)
