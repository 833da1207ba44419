"""Gradient health: per-layer gradient norms and update-to-weight ratios, and the warnings.

The notes' vanishing and exploding gradients, measured. Three pure building blocks
(``jnp`` only, safe under ``jit``, ``vmap`` and ``scan``, no host sync):

- :func:`layer_norms` — the L2 norm of each layer of a pytree (gradients, updates,
  parameters);
- :func:`update_ratios` — ‖Δθ_layer‖ / ‖θ_layer‖ per layer;
- :func:`grad_health_metrics` — both, named as the compiled steps report them with
  ``grad_health=True``: ``"grad_norm/<layer>"`` and ``"update_ratio/<layer>"``.

And one rule on the host, once per epoch: :class:`GradHealth` checks an epoch's
gradient norms and warns (:class:`GradHealthWarning`, naming the layers, the epoch and
the values) when a layer's norm vanishes, explodes or is NaN/inf. ``fit(...,
grad_health=True)`` uses all of it.

**What a layer is.** The arrays directly inside one container (dict, list, tuple) of
the tree form one layer, named by the container's path of keys joined by "/":
``params["dense1"]`` is layer "dense1" (W and b together), a Residual's
``params["residual2"]["block"]["dense1"]`` is "residual2/block/dense1"; arrays directly
at the top of the tree form the layer "params". One exception serves the notes' flat
dicts: when every array of a container has a name made of letters or underscores and a
number (``W1``, ``b1``, ``W2``, ``gamma3``, ...), they group by that number, as layers
"layer1", "layer2", ... (under the container's path: "encoder/layer1"). Layers come in
natural order of their names (digits compare as numbers: "dense2" before "dense10").
Two layers with the same name (a key holding "/") raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fundl._validate import check_int, check_number
from fundl.train.recompile import caller_stacklevel
from fundl.tree import check_same_shapes, global_norm

__all__ = [
    "GradHealth",
    "GradHealthWarning",
    "grad_health_metrics",
    "layer_norms",
    "update_ratios",
]

GRAD_NORM = "grad_norm/"  # the prefix of a layer's gradient norm among a step's metrics
UPDATE_RATIO = "update_ratio/"  # the prefix of its update-to-weight ratio
METRIC_PREFIXES = (GRAD_NORM, UPDATE_RATIO)

_ROOT = "params"  # the name of the arrays directly at the top of the tree
_NUMBERED = re.compile(r"^([A-Za-z_]+)(\d+)$")  # W1, b1, gamma12, W_3


def _key_name(entry: Any) -> str:
    """A key path entry as text: a dict key, a sequence index or an attribute name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def natural_key(name: str) -> list[Any]:
    """The sort key of layer names: digit runs compare as numbers ("dense2" < "dense10").

    Layers are listed in this order (a jitted step returns its metrics in plain string
    order, "dense10" before "dense2": sort them with this key).
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _layers(name: str, tree: Any) -> dict[str, list[jax.Array]]:
    """``{layer name: its arrays}`` by the rule in the module docstring, in natural order."""
    containers: dict[tuple[str, ...], list[tuple[str | None, Any]]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = tuple(_key_name(entry) for entry in path)
        if keys:
            containers.setdefault(keys[:-1], []).append((keys[-1], leaf))
        else:  # the tree is one array
            containers.setdefault((), []).append((None, leaf))
    layers: dict[str, list[jax.Array]] = {}
    origin: dict[str, tuple[str, ...]] = {}  # the container each layer came from
    for where, entries in containers.items():
        matches = [None if k is None else _NUMBERED.match(k) for k, _ in entries]
        prefix = "/".join(where)
        for match, (_, leaf) in zip(matches, entries):
            if all(matches):  # the notes' W1, b1, W2, ...: one layer per number
                number = f"layer{int(match.group(2))}"
                layer = f"{prefix}/{number}" if prefix else number
            else:
                layer = prefix or _ROOT
            if origin.setdefault(layer, where) != where:
                raise ValueError(
                    f"{name}: two parts of the tree are both named layer {layer!r} (a key "
                    "holding '/', or a key named like a layer beside it); rename a key"
                )
            layers.setdefault(layer, []).append(leaf)
    return {k: layers[k] for k in sorted(layers, key=natural_key)}


def layer_norms(tree: Any) -> dict[str, jax.Array]:
    """The L2 norm of each layer of a pytree: ‖θ_layer‖ = sqrt(Σ over its arrays of Σ x²).

    A layer is the arrays directly inside one container (see the module docstring):
    ``{"dense1": {"W", "b"}, ...}`` gives "dense1", ...; the notes' flat ``{"W1", "b1",
    "W2", "b2"}`` gives "layer1", "layer2". Each norm accumulates in float32 (float64
    for float64 arrays); NaN in gives NaN out. Pure ``jnp``: use it inside ``jit``,
    ``vmap`` (a norm per model) or ``scan``.

    Args:
      tree: a pytree of arrays (gradients, updates or parameters).

    Returns:
      ``{layer name: scalar}`` in natural order of the names ("dense2" before "dense10").

    Examples:
      >>> grads = {"W1": jnp.full((2, 2), 0.5), "b1": jnp.zeros(2), "W2": jnp.array([[3.0, 4.0]])}
      >>> {k: float(v) for k, v in fundl.train.layer_norms(grads).items()}
      {'layer1': 1.0, 'layer2': 5.0}
    """
    return _layer_norms("layer_norms", tree)


def _layer_norms(name: str, tree: Any) -> dict[str, jax.Array]:
    return {layer: global_norm(leaves) for layer, leaves in _layers(name, tree).items()}


def update_ratios(updates: Any, params: Any) -> dict[str, jax.Array]:
    """The update-to-weight ratio of each layer: ‖Δθ_layer‖ / ‖θ_layer‖.

    How far one step moves a layer, relative to its size: about 1e-3 per step is the
    usual healthy range with SGD (much smaller: the layer barely learns; near 1: it is
    being overwritten). The compiled steps pass the parameters *after* the update,
    θ + Δθ — as Karpathy's "update / data ratio" does — so a layer initialized at zero
    gives 1 at its first step rather than a division by zero. 0/0 (no update to a zero
    layer) is 0; x/0 is inf; NaN in gives NaN out.

    Args:
      updates: the optimizer's updates Δθ, a pytree like ``params``.
      params: the parameters, the same structure and shapes.

    Returns:
      ``{layer name: scalar}``, the layers of :func:`layer_norms`.

    Examples:
      >>> ratios = fundl.train.update_ratios({"W": jnp.full(4, 0.01)}, {"W": jnp.ones(4)})
      >>> round(float(ratios["params"]), 6)
      0.01
    """
    check_same_shapes("update_ratios", updates, params, "updates", "params")
    step, size = _layer_norms("update_ratios", updates), _layer_norms("update_ratios", params)
    ratios = {}
    for layer, num in step.items():
        den = size[layer]
        dtype = np.promote_types(num.dtype, den.dtype)
        num, den = num.astype(dtype), den.astype(dtype)
        ratios[layer] = jnp.where((num == 0) & (den == 0), jnp.zeros((), dtype), num / den)
    return ratios


def grad_health_metrics(grads: Any, updates: Any, params: Any) -> dict[str, jax.Array]:
    """What a step with ``grad_health=True`` adds to its metrics.

    ``"grad_norm/<layer>"``: ‖g_layer‖ (:func:`layer_norms` of the gradients);
    ``"update_ratio/<layer>"``: ‖Δθ_layer‖ / ‖θ_layer‖ (:func:`update_ratios`, with the
    parameters after the update). Device scalars; for a custom loop::

        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optim.apply_updates(params, updates)
        metrics.update(train.grad_health_metrics(grads, updates, params))

    Args:
      grads: the gradients of the loss with respect to the parameters.
      updates: the optimizer's updates.
      params: the parameters after the update.

    Returns:
      a flat dict of scalars: every layer's gradient norm, then every layer's ratio.

    Examples:
      >>> grads = {"W1": jnp.array([[3.0, 4.0]])}  # ‖g‖ = 5
      >>> updates, params = {"W1": -0.01 * grads["W1"]}, {"W1": jnp.array([[6.0, 8.0]])}
      >>> health = fundl.train.grad_health_metrics(grads, updates, params)
      >>> {name: round(float(value), 4) for name, value in health.items()}  # 0.05 / 10
      {'grad_norm/layer1': 5.0, 'update_ratio/layer1': 0.005}
    """
    metrics = {GRAD_NORM + k: v for k, v in layer_norms(grads).items()}
    metrics.update({UPDATE_RATIO + k: v for k, v in update_ratios(updates, params).items()})
    return metrics


class GradHealthWarning(UserWarning):
    """A layer's gradient norm vanished, exploded or became NaN/inf (see :class:`GradHealth`).

    Attributes:
      rule: "nonfinite", "vanish", "explode" or "growth".
      epoch: the epoch (1-based) of the values, or None.
      layers: ``{layer name: its gradient norm}`` for every layer the rule caught.

    Examples:
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     _ = fundl.train.GradHealth().check({"grad_norm/dense1": float("nan")}, epoch=2)
      >>> warning = caught[0].message
      >>> type(warning).__name__, warning.rule, warning.epoch, warning.layers
      ('GradHealthWarning', 'nonfinite', 2, {'dense1': nan})
    """

    def __init__(
        self, message: str, *, rule: str, epoch: int | None, layers: dict[str, float]
    ) -> None:
        super().__init__(message)
        self.rule = rule
        self.epoch = epoch
        self.layers = layers


_HINTS = {
    "nonfinite": "; a NaN or inf gradient comes from an op such as log(0), x/0, sqrt at 0 or an "
    "overflow in that layer or after it",
    "vanish": "; these layers barely learn: use ReLU with He init, residual connections or batch "
    "norm (docs/training.md, Gradient health)",
    "explode": "; lower the learning rate or clip gradients (fundl.optim.clip_by_global_norm)",
    "growth": "; lower the learning rate or clip gradients (fundl.optim.clip_by_global_norm)",
}
_SHOWN = 6  # layers listed in a message; the warning's .layers holds them all


def _none_or(name: str, value: Any, **bounds: Any) -> float | None:
    return None if value is None else check_number("GradHealth", name, value, **bounds)


@dataclasses.dataclass(frozen=True)
class GradHealth:
    """The rules that say a layer's gradient norm is unhealthy, checked once per epoch.

    Given an epoch's mean gradient norm g_l of each layer l (and the previous epoch's,
    g'_l), it warns — one :class:`GradHealthWarning` per rule that fires, naming every
    layer it caught, the epoch and the values — when

    - **nonfinite**: g_l is NaN or inf (always checked);
    - **vanish**: g_l < ``vanish`` · max_k g_k (three orders of magnitude below the
      layer with the largest gradient, by default: the notes' deep sigmoid network has
      its first layers 1e-6 to 1e-12 below its last, a healthy network stays within
      about ten), or g_l < ``floor`` (1e-12: no signal reaches the layer; it also
      catches a dead network — every ReLU off, g_l = 0 in every layer — which has no
      largest layer to compare with);
    - **explode**: g_l > ``explode`` (1e3 — a classifier's layer norms sit around
      0.01–10; raise it for a loss on a large scale, such as a regression on raw targets);
    - **growth**: g_l > ``growth`` · g'_l (a hundredfold in one epoch: a norm that grows
      this fast is diverging before it is large).

    ``None`` turns a rule off. The norms are epoch means of every step's norms, so a
    NaN at any step makes the epoch's value NaN.

    Args:
      vanish: relative threshold in (0, 1), or None.
      floor: absolute threshold ≥ 0, or None.
      explode: absolute threshold > 0, or None.
      growth: factor > 1 over the previous epoch, or None.

    Examples:
      >>> rules = fundl.train.GradHealth()
      >>> import warnings
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     found = rules.check({"grad_norm/dense1": 1e-7, "grad_norm/dense2": 0.5}, epoch=1)
      >>> [(w.rule, w.layers) for w in found]
      [('vanish', {'dense1': 1e-07})]
    """

    vanish: float | None = 1e-3
    floor: float | None = 1e-12
    explode: float | None = 1e3
    growth: float | None = 100.0

    def __post_init__(self) -> None:
        checked = {
            "vanish": _none_or(
                "vanish", self.vanish, low=0.0, high=1.0, low_open=True, high_open=True
            ),
            "floor": _none_or("floor", self.floor, low=0.0),
            "explode": _none_or("explode", self.explode, low=0.0, low_open=True),
            "growth": _none_or("growth", self.growth, low=1.0, low_open=True),
        }
        for field, value in checked.items():
            object.__setattr__(self, field, value)

    def check(
        self,
        metrics: Mapping[str, Any],
        previous: Mapping[str, Any] | None = None,
        *,
        epoch: int | None = None,
        name: str = "GradHealth.check",
    ) -> list[GradHealthWarning]:
        """Warn for every rule the gradient norms in ``metrics`` break; return the warnings.

        Args:
          metrics: an epoch's metrics as the steps name them: the ``"grad_norm/<layer>"``
            entries are read (host numbers), anything else is ignored — pass the epoch's
            whole logs.
          previous: the previous epoch's metrics, for the growth rule (None: no growth
            check).
          epoch: the epoch the values belong to, for the messages.
          name: who checks, the messages' prefix ("fit").

        Returns:
          the :class:`GradHealthWarning` s issued, in the order nonfinite, vanish,
          explode, growth; empty for a healthy epoch.
        """
        for arg, value in (("metrics", metrics), ("previous", previous)):
            if not isinstance(value, Mapping) and not (arg == "previous" and value is None):
                raise TypeError(
                    f"{name}: {arg} must be a dict of an epoch's metrics (the "
                    f"'grad_norm/<layer>' entries are read){' or None' * (arg == 'previous')}, "
                    f"got {value!r:.80}"
                )
        if epoch is not None:
            epoch = check_int(name, "epoch", epoch, low=0)
        norms = _norms(name, metrics)
        before = _norms(name, previous or {})
        finite = {k: v for k, v in norms.items() if math.isfinite(v)}
        found: dict[str, dict[str, float]] = {
            "nonfinite": {k: v for k, v in norms.items() if k not in finite}
        }
        found["vanish"] = {}
        if finite:
            top = max(finite, key=finite.get)
            low = max(
                self.vanish * finite[top] if self.vanish is not None else -1.0,
                self.floor if self.floor is not None else -1.0,
            )
            found["vanish"] = {k: v for k, v in finite.items() if v < low}
        if self.explode is not None:
            found["explode"] = {k: v for k, v in finite.items() if v > self.explode}
        if self.growth is not None:
            found["growth"] = {
                k: v
                for k, v in finite.items()
                if k in before and 0 < before[k] < math.inf and v > self.growth * before[k]
            }
        where = name if epoch is None else f"{name}: epoch {epoch}"
        issued = []
        for rule, layers in found.items():
            if not layers:
                continue
            message = self._message(rule, where, layers, norms, finite, before)
            warning = GradHealthWarning(message, rule=rule, epoch=epoch, layers=layers)
            warnings.warn(warning, stacklevel=caller_stacklevel())
            issued.append(warning)
        return issued

    def _message(
        self,
        rule: str,
        where: str,
        layers: dict[str, float],
        norms: dict[str, float],
        finite: dict[str, float],
        before: dict[str, float],
    ) -> str:
        if rule == "nonfinite":
            what = "is not finite"
        elif rule == "vanish":
            top = max(finite, key=finite.get)
            parts = []
            if self.vanish is not None:
                parts.append(f"below {self.vanish:g} × the largest, {finite[top]:.3g} in {top!r}")
            if self.floor is not None:
                parts.append(f"below {self.floor:g}")
            what = f"vanished ({', or '.join(parts)})"
        elif rule == "explode":
            what = f"exploded (above {self.explode:g})"
        else:
            what = f"grew more than {self.growth:g}× since the previous epoch"
        entries = [
            f"{k!r} {v:.3g}" + (f" (from {before[k]:.3g})" if rule == "growth" else "")
            for k, v in layers.items()
        ]
        listing = ", ".join(entries[:_SHOWN])
        if len(entries) > _SHOWN:
            listing += f" and {len(entries) - _SHOWN} more"
        count = f"{len(layers)} of {len(norms)} layers"
        return f"{where}: the gradient norm {what} in {count}: {listing}{_HINTS[rule]}"


def _norms(name: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The ``grad_norm/<layer>`` entries of ``metrics`` as ``{layer: float}``, in natural order."""
    norms = {}
    for k, v in metrics.items():
        if not (isinstance(k, str) and k.startswith(GRAD_NORM)):
            continue
        if isinstance(v, (str, bytes, bool)) or np.ndim(v) != 0:
            raise ValueError(
                f"{name}: {k!r} must be a number (the epoch's gradient norm), got {v!r:.60}"
            )
        try:
            norms[k[len(GRAD_NORM) :]] = float(v)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name}: {k!r} must be a number (the epoch's gradient norm), got {v!r:.60}"
            ) from None
    return {k: norms[k] for k in sorted(norms, key=natural_key)}
