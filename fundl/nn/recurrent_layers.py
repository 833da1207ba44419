"""Recurrent layers ``RNN``, ``LSTM`` and ``GRU``: one implementation, three cells.

Each runs its primitive (:mod:`fundl.nn.recurrent`) over batch-first sequences, stacked
``num_layers`` deep, one or two directions, with dropout between the layers. The
parameters are PyTorch's, nested by PyTorch's suffix: the key ``weight_ih_l1_reverse``
of a ``torch.nn.LSTM`` state dict is ``params["l1_reverse"]["W_ih"]`` here
(:func:`params_from_torch`, :func:`params_to_torch`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fundl import initializers
from fundl._validate import (
    as_key,
    check_bool,
    check_floating,
    check_int,
    check_number,
    check_param_dtype,
)
from fundl.nn.base import Layer, as_input_shape, check_params, check_state
from fundl.nn.dropout import dropout as dropout_primitive
from fundl.nn.recurrent import gru, lstm, rnn
from fundl.rules import Primitive

__all__ = ["GRU", "LSTM", "RNN", "params_from_torch", "params_to_torch"]

_TORCH_KEY = re.compile(r"^(weight|bias)_(ih|hh)_(l\d+(?:_reverse)?)$")


def _describe_tree(tree: Any) -> str:
    if isinstance(tree, Mapping):
        return "a dict with " + ", ".join(
            f"{k!r}: {type(v).__name__}" for k, v in list(tree.items())[:4]
        )
    return type(tree).__name__


def params_from_torch(state_dict: Mapping[str, Any]) -> dict[str, dict[str, jax.Array]]:
    """A PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` state dict as fundl params, by renaming.

    ``weight_ih_l{k}[_reverse]`` → ``params["l{k}[_reverse]"]["W_ih"]``, likewise
    ``weight_hh`` → ``W_hh``, ``bias_ih`` → ``b_ih``, ``bias_hh`` → ``b_hh``; the arrays
    are unchanged (same gate order and shapes). Takes any mapping of array-likes, e.g.
    ``{k: v.numpy() for k, v in module.state_dict().items()}``; torch is not imported.

    Raises ``ValueError`` for a key that is not one of those (``proj_size``'s
    ``weight_hr``, a ``batch_first`` wrapper's prefix, ...), and ``TypeError`` for a
    ``state_dict`` that is not a mapping.

    Examples:
      >>> sd = {"weight_ih_l0": np.ones((8, 3)), "bias_hh_l0_reverse": np.zeros(8)}
      >>> jax.tree.map(jnp.shape, params_from_torch(sd))
      {'l0': {'W_ih': (8, 3)}, 'l0_reverse': {'b_hh': (8,)}}
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "params_from_torch: expected a state dict {name: array} (module.state_dict()), "
            f"got {type(state_dict).__name__}"
        )
    params: dict[str, dict[str, jax.Array]] = {}
    for name, value in state_dict.items():
        match = _TORCH_KEY.match(name)
        if match is None:
            raise ValueError(
                f"params_from_torch: unknown key {name!r}; expected keys like weight_ih_l0, "
                "weight_hh_l1_reverse, bias_ih_l0, bias_hh_l0 (an nn.RNN/LSTM/GRU state dict "
                "without proj_size, and without a parent module's prefix)"
            )
        kind, side, suffix = match.groups()
        leaf = ("W_" if kind == "weight" else "b_") + side
        params.setdefault(suffix, {})[leaf] = jnp.asarray(np.asarray(value))
    return params


def params_to_torch(params: Mapping[str, Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """fundl recurrent params as a PyTorch state dict of numpy arrays: the inverse renaming.

    ``{k: torch.from_numpy(v) for k, v in params_to_torch(params).items()}`` loads into
    the matching ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` with ``load_state_dict``.

    Raises ``ValueError`` for an entry that is not ``params["l{k}[_reverse]"][W_ih |
    W_hh | b_ih | b_hh]``, and ``TypeError`` for params that are not such a dict.

    Examples:
      >>> params = LSTM(4).init(0, (5, 3))
      >>> sorted(params_to_torch(params))
      ['bias_hh_l0', 'bias_ih_l0', 'weight_hh_l0', 'weight_ih_l0']
    """
    names = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
    if not isinstance(params, Mapping) or not all(isinstance(t, Mapping) for t in params.values()):
        raise TypeError(
            "params_to_torch: expected the params of an RNN, LSTM or GRU, a dict "
            f"{{'l0': {{'W_ih': ..., ...}}, ...}}, got {_describe_tree(params)}"
        )
    out = {}
    for suffix, tensors in params.items():
        for leaf, value in tensors.items():
            if leaf not in names or not re.fullmatch(r"l\d+(_reverse)?", suffix):
                raise ValueError(
                    f"params_to_torch: unexpected params[{suffix!r}][{leaf!r}]; expected "
                    "params['l0'], params['l0_reverse'], ... each with W_ih, W_hh, b_ih, b_hh"
                )
            out[f"{names[leaf]}_{suffix}"] = np.array(value)  # a writable copy (torch.from_numpy)
    return out


@dataclasses.dataclass(frozen=True, repr=False)
class _Recurrent(Layer):
    """What RNN, LSTM and GRU share; a subclass names its primitive and gate count."""

    hidden_size: int
    num_layers: int = dataclasses.field(default=1, kw_only=True)
    bidirectional: bool = dataclasses.field(default=False, kw_only=True)
    dropout: float = dataclasses.field(default=0.0, kw_only=True)
    param_dtype: Any = dataclasses.field(default=jnp.float32, kw_only=True)

    cell: ClassVar[Primitive]
    gates: ClassVar[int]  # k: W_ih is (kH, d)
    states: ClassVar[int] = 1  # 2 for the LSTM: (h, c)

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_int(name, "hidden_size", self.hidden_size)
        check_int(name, "num_layers", self.num_layers)
        check_bool(name, "bidirectional", self.bidirectional)
        rate = check_number(name, "dropout", self.dropout, low=0.0, high=1.0, high_open=True)
        object.__setattr__(self, "dropout", rate)
        check_param_dtype(name, self.param_dtype)

    # parameters

    @property
    def _directions(self) -> tuple[bool, ...]:
        """The ``reverse`` flag of each direction."""
        return (False, True) if self.bidirectional else (False,)

    def _suffixes(self) -> list[tuple[int, bool, str]]:
        """(layer, reverse, PyTorch suffix) in PyTorch's order: l0, l0_reverse, l1, ..."""
        return [
            (layer, reverse, f"l{layer}" + ("_reverse" if reverse else ""))
            for layer in range(self.num_layers)
            for reverse in self._directions
        ]

    def _bias(self, key: Any, which: str, shape: tuple[int, ...], bound: float) -> jax.Array:
        return initializers.uniform(bound)(key, shape, self.param_dtype)

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict[str, dict[str, jax.Array]]:
        """Every layer's and direction's four tensors, each U(−1/√H, 1/√H) as PyTorch's.

        ``input_shape`` is (..., T, d); layer l > 0 reads the H·dirs outputs below it.
        """
        key = as_key(f"{type(self).__name__}.init", key)
        input_shape = as_input_shape(f"{type(self).__name__}.init", input_shape)
        if len(input_shape) < 2 or input_shape[-1] <= 0:
            raise ValueError(f"{self!r}: expected an input shape (..., T, d), got {input_shape}")
        h, kh = self.hidden_size, self.gates * self.hidden_size
        bound = 1 / math.sqrt(h)
        uniform = initializers.uniform(bound)
        params = {}
        suffixes = self._suffixes()
        for (layer, _, suffix), k in zip(suffixes, jax.random.split(key, len(suffixes))):
            d = int(input_shape[-1]) if layer == 0 else h * len(self._directions)
            k_ih, k_hh, k_bih, k_bhh = jax.random.split(k, 4)
            params[suffix] = {
                "W_ih": uniform(k_ih, (kh, d), self.param_dtype),
                "W_hh": uniform(k_hh, (kh, h), self.param_dtype),
                "b_ih": self._bias(k_bih, "ih", (kh,), bound),
                "b_hh": self._bias(k_bhh, "hh", (kh,), bound),
            }
        return params

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(..., T, d) -> (..., T, H·dirs)."""
        shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        return shape[:-1] + (self.hidden_size * len(self._directions),)

    # running

    def _mask(self, lengths: Any, n: int, t: int) -> jax.Array | None:
        if lengths is None:
            return None
        if isinstance(lengths, (list, tuple)):
            lengths = np.asarray(lengths)
        shape, dtype = jnp.shape(lengths), jnp.result_type(lengths)
        if shape != (n,) or not jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"{self!r}: expected integer lengths of shape ({n},) for a batch of {n} "
                f"sequences, got {dtype} of shape {shape}"
            )
        if not isinstance(lengths, jax.core.Tracer):
            values = np.asarray(lengths)
            if values.min() < 1 or values.max() > t:
                raise ValueError(
                    f"{self!r}: lengths must be in [1, {t}] for sequences of T = {t} steps, got "
                    f"values in [{values.min()}, {values.max()}]"
                )
        return jnp.arange(t)[None, :] < jnp.asarray(lengths)[:, None]

    def _initial(self, initial_state: Any, n: int, dtype: Any) -> tuple[jax.Array, ...]:
        """Each state as (num_layers·dirs, N, H), zeros for None."""
        shape = (self.num_layers * len(self._directions), n, self.hidden_size)
        if initial_state is None:
            return (jnp.zeros(shape, dtype),) * self.states
        pair = self.states > 1 and isinstance(initial_state, (tuple, list))
        given = tuple(initial_state) if pair else (initial_state,)
        got = [tuple(jnp.shape(s)) for s in given]
        if len(given) != self.states or any(g != shape for g in got):
            expected = f"({shape}, {shape}) for (h_0, c_0)" if self.states > 1 else str(shape)
            raise ValueError(
                f"{self!r}: expected initial_state of shape {expected} (num_layers·dirs, batch, "
                f"H), as the final state it returns, got {got if self.states > 1 else got[0]}"
            )
        for s in given:
            check_floating(repr(self), "a floating-point initial_state", s)
        return tuple(jnp.asarray(s).astype(dtype) for s in given)

    def run(
        self,
        params: dict,
        x: jax.Array,
        *,
        initial_state: Any = None,
        lengths: Any = None,
        key: Any = None,
        train: bool = False,
    ) -> tuple[jax.Array, Any]:
        """``(outputs, final_state)`` with PyTorch's shapes.

        Args:
          params: from :meth:`init` (or :func:`params_from_torch`).
          x: (batch, T, d), batch first.
          initial_state: None (zeros), or h_0 (num_layers·dirs, batch, H) — for the LSTM
            the pair (h_0, c_0) — in PyTorch's order l0, l0_reverse, l1, ....
          lengths: None, or int (batch,) in [1, T]: sequence b is x[b, :lengths[b]]
            (right padding). Concrete lengths out of range are refused; under ``jit``,
            a length above T reads all T steps and a length ≤ 0 gives zero outputs and
            the final state h_0.
          key: PRNG key for the dropout between layers (needed when ``train`` and
            ``dropout > 0`` and ``num_layers > 1``).
          train: apply that dropout.

        Returns:
          outputs (batch, T, H·dirs), forward then backward features, 0 at padded
          steps; final_state h_n (num_layers·dirs, batch, H), or (h_n, c_n) for the LSTM,
          each direction's state after its last real step.
        """
        name = repr(self)
        check_bool(name, "train", train)
        if jnp.ndim(x) != 3:
            raise ValueError(f"{name}: expected x of shape (batch, T, d), got shape {jnp.shape(x)}")
        n, t, _ = jnp.shape(x)
        if t == 0:
            raise ValueError(
                f"{name}: sequence length 0 (x of shape {jnp.shape(x)}): nothing to run"
            )
        check_floating(name, "a floating-point input", x)
        check_params(self, params, jnp.shape(x))
        mask = self._mask(lengths, n, t)
        initial = self._initial(initial_state, n, params["l0"]["W_hh"].dtype)
        drop = train and self.dropout > 0 and self.num_layers > 1
        if drop and key is None:
            raise ValueError(
                f"{name}: train=True with dropout={self.dropout} needs a PRNG key to draw the "
                "dropout masks between layers; pass key=..."
            )
        keys = jax.random.split(as_key(name, key), self.num_layers) if drop else None
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for reverse in self._directions:
                index = len(finals)
                p = params[self._suffixes()[index][2]]
                states = tuple(s[index] for s in initial)
                hs, final = self.cell(
                    x, *states, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"], mask, reverse=reverse
                )
                outputs.append(hs)
                finals.append(final if isinstance(final, tuple) else (final,))
            x = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
            if drop and layer < self.num_layers - 1:
                keep = jax.random.bernoulli(keys[layer], 1.0 - self.dropout, jnp.shape(x))
                x = dropout_primitive(x, keep, rate=self.dropout)
        final_state = tuple(jnp.stack(s) for s in zip(*finals))
        return x, final_state if self.states > 1 else final_state[0]

    def apply_with_state(
        self,
        params: dict,
        state: Any,
        x: jax.Array,
        *,
        key: Any = None,
        train: bool = False,
        initial_state: Any = None,
        lengths: Any = None,
    ) -> tuple[jax.Array, Any]:
        """``(outputs (batch, T, H·dirs), state)``: :meth:`run`'s outputs, for containers."""
        check_state(self, state, jnp.shape(x))
        outputs, _ = self.run(
            params, x, initial_state=initial_state, lengths=lengths, key=key, train=train
        )
        return outputs, state


@dataclasses.dataclass(frozen=True, repr=False)
class RNN(_Recurrent):
    """The vanilla RNN layer h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh) (:func:`rnn`).

    Batch-first (batch, T, d) in, (batch, T, H·dirs) out; PyTorch's ``nn.RNN``
    (``batch_first=True``) parameters, nested ``params["l0"] = {"W_ih": (H, d),
    "W_hh": (H, H), "b_ih": (H,), "b_hh": (H,)}``, U(−1/√H, 1/√H). :meth:`run` also
    returns the final state and takes ``initial_state`` and ``lengths``.

    Args:
      hidden_size: H.
      num_layers: stacked layers; layer l > 0 reads the H·dirs outputs of layer l − 1.
      bidirectional: a second, reversed direction per layer; outputs [forward, backward].
      dropout: the drop probability on the outputs of every layer but the last, in
        training (PyTorch's ``dropout``).
      param_dtype: dtype of the parameters.

    Examples:
      >>> layer = RNN(8)
      >>> params = layer.init(jax.random.key(0), (5, 3))     # (T, d)
      >>> layer.apply(params, jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    kind: ClassVar[str] = "rnn"
    cell: ClassVar[Primitive] = rnn
    gates: ClassVar[int] = 1


@dataclasses.dataclass(frozen=True, repr=False)
class GRU(_Recurrent):
    """The GRU layer (:func:`gru`, gate order r, z, n), PyTorch's ``nn.GRU`` parameters.

    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}, n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn)).
    ``params["l0"] = {"W_ih": (3H, d), "W_hh": (3H, H), "b_ih": (3H,), "b_hh": (3H,)}``,
    U(−1/√H, 1/√H). Arguments and :meth:`run` as :class:`RNN`'s.

    Examples:
      >>> layer = GRU(4, num_layers=2, bidirectional=True)
      >>> params = layer.init(0, (5, 3))
      >>> outputs, h_n = layer.run(params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
      >>> outputs.shape, h_n.shape
      ((2, 5, 8), (4, 2, 4))
    """

    kind: ClassVar[str] = "gru"
    cell: ClassVar[Primitive] = gru
    gates: ClassVar[int] = 3


@dataclasses.dataclass(frozen=True, repr=False)
class LSTM(_Recurrent):
    """The LSTM layer (:func:`lstm`, gate order i, f, g, o), PyTorch's ``nn.LSTM`` parameters.

    ``params["l0"] = {"W_ih": (4H, d), "W_hh": (4H, H), "b_ih": (4H,), "b_hh": (4H,)}``,
    U(−1/√H, 1/√H) as PyTorch's, except the forget gate's bias: its slice of b_ih
    (rows H:2H) is ``forget_bias`` and of b_hh is 0, so the gate starts near
    σ(forget_bias) and the cell keeps its memory early in training (Gers et al. 2000;
    Jozefowicz et al. 2015; Keras' ``unit_forget_bias``). ``forget_bias=None`` keeps
    PyTorch's uniform draw. :meth:`run`'s final state is (h_n, c_n).

    Args:
      hidden_size: as :class:`RNN`'s.
      num_layers: as :class:`RNN`'s.
      bidirectional: as :class:`RNN`'s.
      dropout: as :class:`RNN`'s.
      param_dtype: as :class:`RNN`'s.
      forget_bias: the forget gate's initial bias (default 1.0), or None.

    Examples:
      >>> layer = LSTM(4)
      >>> params = layer.init(0, (5, 3))
      >>> params["l0"]["b_ih"][4:8].tolist()                 # the forget slice
      [1.0, 1.0, 1.0, 1.0]
      >>> outputs, (h_n, c_n) = layer.run(params, jnp.ones((2, 5, 3)))
      >>> outputs.shape, c_n.shape
      ((2, 5, 4), (1, 2, 4))
    """

    forget_bias: float | None = dataclasses.field(default=1.0, kw_only=True)

    kind: ClassVar[str] = "lstm"
    cell: ClassVar[Primitive] = lstm
    gates: ClassVar[int] = 4
    states: ClassVar[int] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget_bias is not None:
            bias = check_number("LSTM", "forget_bias", self.forget_bias)
            object.__setattr__(self, "forget_bias", bias)

    def _bias(self, key: Any, which: str, shape: tuple[int, ...], bound: float) -> jax.Array:
        b = super()._bias(key, which, shape, bound)
        if self.forget_bias is None:
            return b
        h = self.hidden_size
        value = self.forget_bias if which == "ih" else 0.0
        return b.at[h : 2 * h].set(jnp.asarray(value, self.param_dtype))
