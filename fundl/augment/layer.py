"""The ``Augment`` layer: per-example transforms in training, the identity in evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from fundl._validate import as_key, check_bool, check_floating
from fundl.nn.base import Layer, as_input_shape, check_params, check_state

__all__ = ["Augment"]


@dataclasses.dataclass(frozen=True, repr=False)
class Augment(Layer):
    """Per-example transforms as a layer: applied in training, the identity in evaluation.

    Takes a batch x of shape (N, H, W, C), channels last — a grayscale batch too needs
    its channel axis, ``x[..., None]``: an (N, H, W) batch would be one image whose rows
    are the examples. ``train=True``: each example gets its own split of the layer's
    key (split N ways), and each transform in turn its own split of the example's key,
    so examples and transforms draw independently. ``train=False``: the input,
    unchanged; no key needed. No parameters, no state. Put it first in a
    ``Sequential`` so augmentation runs inside the compiled training step.

    Args:
      transforms: hashable transforms ``t(key, image)``, in order: ``RandomFlip``,
        ``RandomCrop``, ``RandomTranslate``, ``RandomRotate``, ``ColorJitter``,
        ``Cutout`` (one transform alone is taken as a tuple of one).

    Examples:
      >>> from fundl.augment import Augment, RandomCrop, RandomFlip
      >>> layer = Augment((RandomCrop(2), RandomFlip()))
      >>> x = jnp.arange(3.0).reshape(1, 1, 3, 1)              # one 1 x 3 image
      >>> layer.apply({}, x) is x                              # evaluation: the identity
      True
      >>> flip = Augment(RandomFlip(p=1.0))
      >>> flip.apply({}, x, key=jax.random.key(0), train=True)[0, 0, :, 0].tolist()
      [2.0, 1.0, 0.0]
    """

    transforms: tuple[Any, ...]

    kind: ClassVar[str] = "augment"

    def __post_init__(self) -> None:
        transforms = self.transforms
        if callable(transforms) and not isinstance(transforms, (tuple, list)):
            transforms = (transforms,)
        if not isinstance(transforms, Sequence) or not transforms:
            raise ValueError(
                f"Augment: transforms must be a non-empty tuple of transforms such as "
                f"(RandomCrop(4), RandomFlip()), got {self.transforms!r}"
            )
        for i, t in enumerate(transforms):
            if not callable(t) or isinstance(t, Layer):
                raise TypeError(
                    f"Augment: transform {i} ({t!r}) is not a transform; expected t(key, image) "
                    "such as RandomFlip() or RandomCrop(4)"
                )
            try:
                hash(t)
            except TypeError as error:
                raise TypeError(
                    f"Augment: transform {i} ({t!r}) is not hashable, so the layer could not "
                    "be a static jit argument; use the configs (RandomFlip(), ...)"
                ) from error
        object.__setattr__(self, "transforms", tuple(transforms))

    def init(self, key: Any, input_shape: tuple[int, ...]) -> dict:
        """No parameters: ``{}``."""
        del key, input_shape
        return {}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input shape: (H, W, C), the batch axis optional."""
        input_shape = as_input_shape(f"{type(self).__name__}.output_shape", input_shape)
        if len(input_shape) not in (3, 4):
            raise ValueError(
                f"{self!r}: expected images of shape (H, W, C) (batch axis optional), got "
                f"input_shape {tuple(input_shape)}; a grayscale image needs a channel axis: "
                f"{tuple(input_shape) + (1,)}"
            )
        return tuple(input_shape)

    def _augment_one(self, key: jax.Array, image: jax.Array) -> jax.Array:
        for transform, k in zip(self.transforms, jax.random.split(key, len(self.transforms))):
            image = transform(k, image)
        return image

    def apply_with_state(
        self, params: dict, state: Any, x: jax.Array, *, key: Any = None, train: bool = False
    ) -> tuple[jax.Array, Any]:
        """``(augmented x, state)`` in training, ``(x, state)`` in evaluation.

        Raises ``ValueError`` in training for an input that is not a batch (N, H, W, C)
        or without a key; ``TypeError``, in training and evaluation alike, for an integer
        input to rotation or jitter (the model would be evaluated on other values than it
        was trained on). In evaluation any other input passes through (one unbatched image
        too, as the layers after it may take one).
        """
        check_bool(repr(self), "train", train)
        if train and jnp.ndim(x) != 4:
            raise ValueError(
                f"{self!r}: expected a batch of images of shape (N, H, W, C), got shape "
                f"{jnp.shape(x)}; a grayscale batch (N, H, W) needs a channel axis: "
                "x[..., None]; one image (H, W, C): x[None]"
            )
        needs = [t for t in self.transforms if getattr(t, "needs_floating", False)]
        if needs:
            check_floating(repr(self), f"a floating-point input for {needs[0]!r}", x)
        check_params(self, params, jnp.shape(x))
        check_state(self, state, jnp.shape(x))
        if not train:
            return x, state
        if key is None:
            raise ValueError(
                f"{self!r}: train=True needs a PRNG key to draw the augmentations; pass "
                "key=... to apply (fit and the train steps pass one per step)"
            )
        key = as_key(repr(self), key)
        keys = jax.random.split(key, jnp.shape(x)[0])
        return jax.vmap(self._augment_one)(keys, x), state
