"""Text generation with a key/value cache: greedy, temperature and top-k sampling.

``generate`` feeds the prompt through ``TransformerLM.decode`` in one call (the
prefill), then one token per step of a ``lax.scan``: each step picks a token from the
last logits (``sample_token``) and decodes it, reusing every earlier key and value —
so a step costs one row of attention, not a pass over the whole sequence. The whole
loop is one compiled function per (model, prompt shape, length, top_k).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from fundl._validate import as_key, check_int, check_label_range, check_number
from fundl.nn.base import check_params
from fundl.tree import accumulation_dtype

__all__ = ["generate", "sample_token"]


def _check_sampling(name: str, temperature: Any, top_k: Any, vocab: int | None) -> float:
    temperature = check_number(name, "temperature", temperature, low=0.0)
    if top_k is not None:
        check_int(name, "top_k", top_k, low=1, high=vocab)
    return temperature


def sample_token(
    logits: jax.Array, key: Any = None, *, temperature: float = 1.0, top_k: int | None = None
) -> jax.Array:
    """A token per row of ``logits`` (..., vocab): argmax, or a draw from softmax(z / T).

    temperature = 0 is greedy (argmax; no key needed). Otherwise the token is drawn from
    p ∝ exp(z / T) restricted to the ``top_k`` largest logits (all of them for None; ties
    at the k-th value are kept), with the explicit ``key``. A row of logits holding a NaN,
    or −inf everywhere (every token masked: softmax is 0/0), gives −1 — no token, outside
    every vocabulary — never an arbitrary valid one (fed back to ``generate``, its
    embedding is a NaN row, so what follows is −1 too). A row with +inf logits samples
    uniformly among the +inf tokens, at any T > 0: the limit of softmax(z / T) as those
    logits grow together (greedy takes the first of them, as argmax does).

    Args:
      logits: (..., vocab) scores.
      key: a PRNG key (or int seed); required when temperature > 0.
      temperature: T ≥ 0.
      top_k: None or an int in [1, vocab].

    Returns:
      int32 token ids (...); −1 where the logits have a NaN or are all −inf.

    Examples:
      >>> z = jnp.log(jnp.array([[0.1, 0.6, 0.3]]))
      >>> fundl.models.sample_token(z, temperature=0.0).tolist()
      [1]
      >>> z = jnp.array([0.0, jnp.inf, jnp.inf, 5.0])  # tokens 1 and 2, each half the time
      >>> sorted({int(fundl.models.sample_token(z, k)) for k in range(20)})
      [1, 2]
    """
    name = "sample_token"
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating) or jnp.ndim(logits) < 1:
        raise TypeError(
            f"{name}: expected floating logits (..., vocab), got {jnp.result_type(logits)} "
            f"of shape {jnp.shape(logits)}"
        )
    temperature = _check_sampling(name, temperature, top_k, jnp.shape(logits)[-1])
    if temperature == 0.0:
        return _greedy(logits)
    if key is None:
        raise ValueError(f"{name}: temperature {temperature} > 0 samples and needs a key=...")
    return _sample(logits, as_key(name, key), temperature, top_k)


def _no_token_for_nan(logits: jax.Array, token: jax.Array) -> jax.Array:
    """−1 (no token: outside every vocabulary) where a row of logits has a NaN or is all
    −inf (argmax and categorical would give token 0 there, as if it were drawn)."""
    undefined = jnp.any(jnp.isnan(logits), axis=-1) | jnp.all(logits == -jnp.inf, axis=-1)
    return jnp.where(undefined, -1, token).astype(jnp.int32)


def _greedy(logits: jax.Array) -> jax.Array:
    return _no_token_for_nan(logits, jnp.argmax(logits, axis=-1))


def _sample(logits: jax.Array, key: jax.Array, temperature: Any, top_k: int | None) -> jax.Array:
    """A draw from softmax(z / T) over the top_k largest z (checked by the callers).

    (z − max z)/T is computed in float32 at least, with T at least float32's smallest
    normal number: in float16, z/T overflows to +inf for several z at a small T (and
    categorical then takes the first, not the largest), and a tiny T rounds to 0. In a
    row whose largest z is +inf, the +inf tokens become 0 and the rest −inf: categorical
    (Gumbel + argmax) would take the first +inf every time, where the limit of the
    softmax is uniform among them.
    """
    wide = accumulation_dtype(logits)
    z = logits.astype(wide)
    top = jnp.max(z, axis=-1, keepdims=True)
    minus_inf = jnp.asarray(-jnp.inf, wide)
    z = jnp.where(
        top == jnp.inf,
        jnp.where(z == jnp.inf, jnp.zeros_like(z), minus_inf),
        z - jnp.where(jnp.isfinite(top), top, jnp.zeros_like(top)),  # the largest is 0
    )
    z = z / jnp.maximum(jnp.asarray(temperature, wide), jnp.finfo(jnp.float32).tiny)
    if top_k is not None:
        kth = jax.lax.top_k(z, top_k)[0][..., -1:]
        z = jnp.where(z >= kth, z, jnp.asarray(-jnp.inf, z.dtype))
    return _no_token_for_nan(logits, jax.random.categorical(key, z, axis=-1))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "top_k", "greedy"))
def _generate(model, params, prompt, key, temperature, *, max_new_tokens, top_k, greedy):
    batch, length = prompt.shape[:-1], prompt.shape[-1]
    cache = model.init_cache(batch, dtype=jnp.result_type(*jax.tree.leaves(params)))
    logits, cache = model.decode(params, cache, prompt, 0)

    def step(carry, inputs):
        last, cache = carry
        i, k = inputs
        if greedy:
            token = _greedy(last)
        else:
            token = _sample(last, k, temperature, top_k)
        logits, cache = model.decode(params, cache, token[..., None], length + i)
        return (logits[..., -1, :], cache), token

    steps = jnp.arange(max_new_tokens)
    keys = jax.random.split(key, max_new_tokens)
    _, tokens = jax.lax.scan(step, (logits[..., -1, :], cache), (steps, keys))
    return jnp.concatenate([prompt.astype(jnp.int32), jnp.moveaxis(tokens, 0, -1)], axis=-1)


def generate(
    model: Any,
    params: Any,
    prompt: Any,
    *,
    max_new_tokens: int,
    key: Any = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> jax.Array:
    """The prompt followed by ``max_new_tokens`` generated tokens, with a key/value cache.

    Each new token is ``sample_token(logits of the last token, key_i, temperature,
    top_k)``: greedy (argmax) for temperature 0, else a draw with the i-th split of
    ``key``. The cached logits equal ``model.apply`` on the whole sequence (tested), so
    greedy generation equals taking the argmax of a full pass step by step.

    Args:
      model: a :class:`~fundl.models.TransformerLM` (anything with ``init_cache`` and
        ``decode``).
      params: its parameters.
      prompt: int token ids (N, L_p) (more leading axes allowed), L_p ≥ 1, in
        [0, vocab_size) (a concrete prompt is checked).
      max_new_tokens: how many tokens to add (L_p + max_new_tokens ≤ model.max_length).
      key: PRNG key (or int seed); required when temperature > 0.
      temperature: T ≥ 0; 0 is greedy.
      top_k: None or an int in [1, vocab]: sample among the k largest logits only.

    Returns:
      int32 (N, L_p + max_new_tokens).

    Examples:
      >>> lm = fundl.models.transformer_lm(7, d_model=8, num_heads=2, num_layers=1,
      ...                                  max_length=10)
      >>> params = lm.init(jax.random.key(0))
      >>> out = fundl.models.generate(lm, params, jnp.array([[1, 2, 3]]), max_new_tokens=4,
      ...                             temperature=0.0)
      >>> out.shape
      (1, 7)
    """
    name = "generate"
    check_int(name, "max_new_tokens", max_new_tokens)
    for method in ("init_cache", "decode"):
        if not callable(getattr(model, method, None)):
            raise TypeError(f"{name}: {model!r} has no {method}; expected a TransformerLM")
    vocab = getattr(model, "vocab_size", None)
    temperature = _check_sampling(name, temperature, top_k, vocab)
    if not jnp.issubdtype(jnp.result_type(prompt), jnp.integer):
        raise TypeError(
            f"{name}: expected an integer prompt (N, L), got {jnp.result_type(prompt)} of "
            f"shape {jnp.shape(prompt)}"
        )
    if jnp.ndim(prompt) < 2:
        raise ValueError(
            f"{name}: expected a prompt of shape (N, L) (more leading axes allowed), got shape "
            f"{jnp.shape(prompt)}; one sequence is prompt[None]"
        )
    length = jnp.shape(prompt)[-1]
    if length == 0:
        raise ValueError(f"{name}: the prompt is empty (shape {jnp.shape(prompt)})")
    if vocab is not None:
        check_label_range(name, prompt, vocab, what="prompt token ids")
    if length + max_new_tokens > model.max_length:
        raise ValueError(
            f"{name}: a prompt of {length} tokens plus {max_new_tokens} new ones is longer "
            f"than the model's max_length {model.max_length}"
        )
    greedy = temperature == 0.0
    if not greedy and key is None:
        raise ValueError(f"{name}: temperature {temperature} > 0 samples and needs a key=...")
    key = jax.random.key(0) if greedy else as_key(name, key)
    check_params(model, params, jnp.shape(prompt))  # before the cache takes their dtype
    return _generate(
        model,
        params,
        jnp.asarray(prompt),
        key,
        temperature,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        greedy=greedy,
    )
