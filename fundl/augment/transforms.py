"""Per-example image transforms: the functions, their hashable configs, and ``batched``.

Each transform takes a PRNG key first and one channels-last image (H, W, C), options
keyword-only after it, and returns an image of the same shape and dtype, the same for
the same key (see :mod:`fundl.augment`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.ndimage import map_coordinates

from fundl._validate import as_key, check_floating, check_int, check_number

__all__ = [
    "ColorJitter",
    "Cutout",
    "RandomCrop",
    "RandomFlip",
    "RandomRotate",
    "RandomTranslate",
    "batched",
    "color_jitter",
    "cutout",
    "random_crop",
    "random_flip",
    "random_rotate",
    "random_translate",
]


def _check_image(name: str, image: Any, *, floating: bool = False) -> jax.Array:
    """The image as a jax array, after checking its rank (and that it is floating)."""
    if jnp.ndim(image) != 3:
        raise ValueError(
            f"{name}: expected one image of shape (H, W, C), got shape {jnp.shape(image)}; "
            "a grayscale image needs a channel axis (image[..., None]); map over a batch "
            "(N, H, W, C) with batched(...) or the Augment layer"
        )
    if floating:
        check_floating(
            name,
            "a floating-point image (convert uint8 with image.astype(jnp.float32) / 255)",
            image,
        )
    return jnp.asarray(image)


def _compute_dtype(dtype: Any) -> Any:
    """float32 for bfloat16/float16 images (their sums and coordinates lose too much)."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _window(image: jax.Array, pad: tuple[int, int], offset: jax.Array, fill: Any) -> jax.Array:
    """The (H, W) window at ``offset`` of the image padded by ``pad`` rows and columns."""
    h, w, c = image.shape
    padded = jnp.pad(
        image,
        ((pad[0], pad[0]), (pad[1], pad[1]), (0, 0)),
        constant_values=jnp.asarray(fill, image.dtype),
    )
    return lax.dynamic_slice(padded, (offset[0], offset[1], jnp.zeros((), offset.dtype)), (h, w, c))


def _check_fill(name: str, fill: float, image: jax.Array) -> None:
    """``fill`` must be a value of the image's dtype: cast to it, it would change silently
    (an integer truncated or wrapped, 1e6 in float16 inf, 2 in a bool image True)."""
    dtype = image.dtype
    if dtype == jnp.bool_:
        if fill not in (0.0, 1.0):
            raise ValueError(
                f"{name}: fill must be 0 or 1 (False or True) for a bool image, got {fill!r}"
            )
    elif jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        if fill != int(fill) or not info.min <= fill <= info.max:
            raise ValueError(
                f"{name}: fill must be an integer in [{info.min}, {info.max}] for a "
                f"{dtype} image, got {fill!r}"
            )
    elif jnp.issubdtype(dtype, jnp.floating):
        top = float(jnp.finfo(dtype).max)
        if not -top <= fill <= top:
            raise ValueError(
                f"{name}: fill must be a finite number in [{-top:g}, {top:g}] for a {dtype} "
                f"image (beyond it the cast gives inf), got {fill!r}"
            )


def random_flip(key: Any, image: jax.Array, *, p: float = 0.5) -> jax.Array:
    """Flip the image horizontally (the W axis) with probability p.

    y = x[:, ::-1, :] if b else x, with b = ``jax.random.bernoulli(key, p)``.

    Args:
      key: a PRNG key (or an int seed).
      image: (H, W, C), any dtype.
      p: the probability of flipping, in [0, 1].

    Returns:
      (H, W, C), the image's dtype.

    Examples:
      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> fundl.augment.random_flip(0, image, p=1.0)[:, :, 0]
      Array([[3., 2., 1.],
             [6., 5., 4.],
             [9., 8., 7.]], dtype=float32)
    """
    p = check_number("random_flip", "p", p, low=0.0, high=1.0)
    key = as_key("random_flip", key)
    image = _check_image("random_flip", image)
    return jnp.where(jax.random.bernoulli(key, p), image[:, ::-1, :], image)


def random_crop(key: Any, image: jax.Array, *, padding: int = 4, fill: float = 0.0) -> jax.Array:
    """Pad each side by ``padding`` and crop back to (H, W) at a uniform offset (CIFAR's recipe).

    y = pad(x)[o_y : o_y + H, o_x : o_x + W], with the offsets o =
    ``jax.random.randint(key, (2,), 0, 2·padding + 1)``, uniform in [0, 2·padding] and
    independent per axis: the image moves by padding − o pixels down and right, and
    ``fill`` enters where it moved away from.

    Args:
      key: a PRNG key (or an int seed).
      image: (H, W, C), any dtype.
      padding: pixels added on each side, a non-negative int (0 is the identity).
      fill: the value of the padding, which must be a value of the image's dtype: an
        integer in range for an integer image, 0 or 1 for a bool image, within ±65504
        for a float16 image (±the dtype's largest finite value for any float image).

    Returns:
      (H, W, C), the image's dtype.

    Examples:
      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> fundl.augment.random_crop(0, image, padding=1)[:, :, 0]  # o = (1, 0): right by 1
      Array([[0., 1., 2.],
             [0., 4., 5.],
             [0., 7., 8.]], dtype=float32)
      >>> fundl.augment.random_crop(3, image, padding=1, fill=-1.0)[:, :, 0]  # o = (0, 1): down
      Array([[-1., -1., -1.],
             [ 1.,  2.,  3.],
             [ 4.,  5.,  6.]], dtype=float32)
    """
    padding = check_int("random_crop", "padding", padding, low=0)
    fill = check_number("random_crop", "fill", fill)
    key = as_key("random_crop", key)
    image = _check_image("random_crop", image)
    _check_fill("random_crop", fill, image)
    offset = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return _window(image, (padding, padding), offset, fill)


def _as_pair(name: str, arg: str, value: Any) -> tuple[int, int]:
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name}: {arg} must be an int or a pair (dy, dx), got {value!r}")
    return tuple(check_int(name, arg, v, low=0) for v in pair)


def random_translate(key: Any, image: jax.Array, *, max_shift: int | tuple[int, int]) -> jax.Array:
    """Shift the image by whole pixels, uniform in [−max_shift, max_shift] per axis; zeros enter.

    y[i, j] = x[i − s_y, j − s_x] where that lies in the image, else 0, with the shift
    s = ``jax.random.randint(key, (2,), -m, m + 1)`` for m = (dy, dx): a positive s_y
    moves the content down, a positive s_x to the right.

    Args:
      key: a PRNG key (or an int seed).
      image: (H, W, C), any dtype.
      max_shift: m, a non-negative int for both axes or a pair (dy, dx).

    Returns:
      (H, W, C), the image's dtype.

    Examples:
      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> fundl.augment.random_translate(2, image, max_shift=1)[:, :, 0]  # s = (1, 1)
      Array([[0., 0., 0.],
             [0., 1., 2.],
             [0., 4., 5.]], dtype=float32)
      >>> fundl.augment.random_translate(0, image, max_shift=1)[:, :, 0]  # s = (0, −1)
      Array([[2., 3., 0.],
             [5., 6., 0.],
             [8., 9., 0.]], dtype=float32)
    """
    my, mx = _as_pair("random_translate", "max_shift", max_shift)
    key = as_key("random_translate", key)
    image = _check_image("random_translate", image)
    shift = jax.random.randint(key, (2,), jnp.array([-my, -mx]), jnp.array([my + 1, mx + 1]))
    return _window(image, (my, mx), jnp.array([my, mx], shift.dtype) - shift, 0)


def random_rotate(key: Any, image: jax.Array, *, max_degrees: float) -> jax.Array:
    """Rotate about the centre by θ ~ U(−max_degrees, max_degrees), bilinear, zeros outside.

    A positive θ turns the content counter-clockwise as displayed (row 0 at the top),
    as torchvision's ``rotate``. Output pixel (i, j), at x = j − c_x, y = i − c_y from
    the centre c = ((H − 1)/2, (W − 1)/2), samples the input at row c_y + x sin θ +
    y cos θ, column c_x + x cos θ − y sin θ (``map_coordinates``, order=1); a sample
    outside the image reads 0.

    Args:
      key: a PRNG key (or an int seed); θ = ``jax.random.uniform(key, (), minval=-max,
        maxval=max)`` degrees.
      image: (H, W, C), floating.
      max_degrees: in [0, 180] (0 is the identity).

    Returns:
      (H, W, C), the image's dtype (bfloat16 and float16 computed in float32).

    Examples:
      θ ≈ −11.05° for this key; the centre stays, the corners blend their neighbours:

      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> out = fundl.augment.random_rotate(1, image, max_degrees=90.0)
      >>> np.round(np.asarray(out[:, :, 0], np.float64), 2)
      array([[1.35, 1.86, 2.31],
             [4.59, 5.  , 5.41],
             [5.96, 8.14, 6.92]])
    """
    max_degrees = check_number("random_rotate", "max_degrees", max_degrees, low=0.0, high=180.0)
    key = as_key("random_rotate", key)
    image = _check_image("random_rotate", image, floating=True)
    dtype = _compute_dtype(image.dtype)
    degrees = jax.random.uniform(key, (), dtype, -max_degrees, max_degrees)
    theta = degrees * (jnp.pi / 180)
    h, w, _ = image.shape
    y = jnp.arange(h, dtype=dtype)[:, None] - (h - 1) / 2
    x = jnp.arange(w, dtype=dtype)[None, :] - (w - 1) / 2
    sin, cos = jnp.sin(theta), jnp.cos(theta)
    rows = (h - 1) / 2 + x * sin + y * cos
    cols = (w - 1) / 2 + x * cos - y * sin

    def channel(plane: jax.Array) -> jax.Array:
        return map_coordinates(plane, [rows, cols], order=1, mode="constant", cval=0.0)

    out = jax.vmap(channel, in_axes=2, out_axes=2)(image.astype(dtype))
    return out.astype(image.dtype)


def color_jitter(
    key: Any, image: jax.Array, *, brightness: float = 0.0, contrast: float = 0.0
) -> jax.Array:
    """Random brightness, then contrast: y = m + f·(x + δ − m), m = mean(x + δ).

    δ ~ U(−brightness, brightness) is added to every value (pixel values in [0, 1]: a
    brightness of 0.2 moves them by up to a fifth of the range); f ~ U(1 − contrast,
    1 + contrast) scales the deviations from the image's mean m over all pixels and
    channels, which contrast keeps. One δ and one f per image, from the two halves of
    ``jax.random.split(key)``. Values are not clipped. Not torchvision's ``ColorJitter``,
    which multiplies by a brightness factor, blends with the grayscale mean and clamps to
    [0, 1] (see docs/augment.md).

    Args:
      key: a PRNG key (or an int seed).
      image: (H, W, C), floating.
      brightness: the largest |δ|, ≥ 0 (0: no brightness change).
      contrast: in [0, 1], the largest |f − 1| (0: no contrast change).

    Returns:
      (H, W, C), the image's dtype (bfloat16 and float16 computed in float32).

    Examples:
      The mean moves by δ, and the deviations from it scale by f:

      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> out = fundl.augment.color_jitter(4, image, brightness=0.1, contrast=0.5)
      >>> delta, f = jnp.mean(out) - jnp.mean(image), jnp.std(out) / jnp.std(image)
      >>> f"δ = {float(delta):.3f}, f = {float(f):.3f}"
      'δ = 0.009, f = 1.138'
    """
    brightness = check_number("color_jitter", "brightness", brightness, low=0.0)
    contrast = check_number("color_jitter", "contrast", contrast, low=0.0, high=1.0)
    key = as_key("color_jitter", key)
    image = _check_image("color_jitter", image, floating=True)
    dtype = _compute_dtype(image.dtype)
    key_b, key_c = jax.random.split(key)
    delta = jax.random.uniform(key_b, (), dtype, -brightness, brightness)
    factor = jax.random.uniform(key_c, (), dtype, 1.0 - contrast, 1.0 + contrast)
    x = image.astype(dtype) + delta
    mean = jnp.mean(x)
    return (mean + factor * (x - mean)).astype(image.dtype)


def cutout(key: Any, image: jax.Array, *, size: int) -> jax.Array:
    """Zero a size × size square at a uniform random centre, clipped at the borders.

    As DeVries & Taylor (2017): the centre (c_y, c_x) = ``jax.random.randint(key, (2,),
    0, (H, W))`` is any pixel, and the square rows [c_y − ⌊size/2⌋, c_y − ⌊size/2⌋ +
    size) × the same columns is cut where it overlaps the image, in every channel — so
    fewer than size² pixels are zeroed near a border.

    Args:
      key: a PRNG key (or an int seed).
      image: (H, W, C), any dtype.
      size: the side of the square, a positive int.

    Returns:
      (H, W, C), the image's dtype.

    Examples:
      >>> image = jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> fundl.augment.cutout(0, image, size=2)[:, :, 0]  # centre (1, 0): rows 0-1, column 0
      Array([[0., 2., 3.],
             [0., 5., 6.],
             [7., 8., 9.]], dtype=float32)
    """
    size = check_int("cutout", "size", size)
    key = as_key("cutout", key)
    image = _check_image("cutout", image)
    h, w, _ = image.shape
    centre = jax.random.randint(key, (2,), 0, jnp.array([h, w]))
    top, left = centre[0] - size // 2, centre[1] - size // 2
    rows = jnp.arange(h, dtype=centre.dtype)[:, None]
    cols = jnp.arange(w, dtype=centre.dtype)[None, :]
    cut = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(cut[:, :, None], jnp.zeros((), image.dtype), image)


def batched(transform: Callable[[Any, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """Map a per-example transform over a batch, a split of the key per example.

    y_i = transform(k_i, x_i) with (k_1, ..., k_N) = ``jax.random.split(key, N)``.

    Args:
      transform: ``t(key, image) -> image``: a config (``RandomCrop(4)``) or a function
        with its options bound (``functools.partial(random_crop, padding=4)``).

    Returns:
      ``apply(key, images)`` for images (N, H, W, C) -> (N, H, W, C).

    Examples:
      >>> flip = fundl.augment.batched(fundl.augment.RandomFlip())
      >>> flip(jax.random.key(0), jnp.ones((5, 4, 4, 3))).shape
      (5, 4, 4, 3)
    """
    if not callable(transform):
        raise TypeError(f"batched: expected a transform t(key, image), got {transform!r}")
    name = f"batched({transform!r})"

    def apply(key: Any, images: jax.Array) -> jax.Array:
        key = as_key(name, key)
        if jnp.ndim(images) != 4:
            raise ValueError(
                f"{name}: expected images of shape (N, H, W, C), got shape "
                f"{jnp.shape(images)}; a grayscale batch needs a channel axis: images[..., None]"
            )
        return jax.vmap(transform)(jax.random.split(key, jnp.shape(images)[0]), images)

    return apply


class _Transform:
    """What the configs share: a short repr (the fields off their defaults) and
    ``needs_floating`` (rotation, jitter), which ``Augment`` checks before it traces."""

    needs_floating: ClassVar[bool] = False

    def __repr__(self) -> str:
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.default is dataclasses.MISSING:
                parts.append(repr(value))
            elif value != field.default:
                parts.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclasses.dataclass(frozen=True, repr=False)
class RandomFlip(_Transform):
    """:func:`random_flip` as a hashable config: ``RandomFlip(p)(key, image)``.

    Examples:
      >>> fundl.augment.RandomFlip(), fundl.augment.RandomFlip(p=1.0)
      (RandomFlip(), RandomFlip(p=1.0))
      >>> fundl.augment.RandomFlip(p=1.5)
      Traceback (most recent call last):
      ValueError: RandomFlip: p must be a finite number in [0, 1]; got 1.5
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", check_number("RandomFlip", "p", self.p, low=0.0, high=1.0))

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The flipped (or not) image: :func:`random_flip`."""
        return random_flip(key, image, p=self.p)


@dataclasses.dataclass(frozen=True, repr=False)
class RandomCrop(_Transform):
    """:func:`random_crop` as a hashable config: ``RandomCrop(padding, fill)(key, image)``.

    Equal configs hash alike, so one can be a static argument of ``jax.jit``.

    Examples:
      >>> crop, same = fundl.augment.RandomCrop(2), fundl.augment.RandomCrop(padding=2)
      >>> crop, crop == same, hash(crop) == hash(same)
      (RandomCrop(padding=2), True, True)
    """

    padding: int = 4
    fill: float = 0.0

    def __post_init__(self) -> None:
        padding = check_int("RandomCrop", "padding", self.padding, low=0)
        object.__setattr__(self, "padding", padding)
        object.__setattr__(self, "fill", check_number("RandomCrop", "fill", self.fill))

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The cropped image: :func:`random_crop`."""
        return random_crop(key, image, padding=self.padding, fill=self.fill)


@dataclasses.dataclass(frozen=True, repr=False)
class RandomTranslate(_Transform):
    """:func:`random_translate` as a hashable config; ``max_shift`` is kept as (dy, dx).

    Examples:
      >>> shift = fundl.augment.RandomTranslate(2)
      >>> shift, shift.max_shift
      (RandomTranslate((2, 2)), (2, 2))
    """

    max_shift: tuple[int, int]

    def __post_init__(self) -> None:
        shift = _as_pair("RandomTranslate", "max_shift", self.max_shift)
        object.__setattr__(self, "max_shift", shift)

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The shifted image: :func:`random_translate`."""
        return random_translate(key, image, max_shift=self.max_shift)


@dataclasses.dataclass(frozen=True, repr=False)
class RandomRotate(_Transform):
    """:func:`random_rotate` as a hashable config: ``RandomRotate(max_degrees)(key, image)``.

    Examples:
      >>> fundl.augment.RandomRotate(15)
      RandomRotate(15.0)
      >>> fundl.augment.RandomRotate(200)
      Traceback (most recent call last):
      ValueError: RandomRotate: max_degrees must be a finite number in [0, 180]; got 200
    """

    max_degrees: float
    needs_floating: ClassVar[bool] = True

    def __post_init__(self) -> None:
        degrees = check_number("RandomRotate", "max_degrees", self.max_degrees, low=0.0, high=180.0)
        object.__setattr__(self, "max_degrees", degrees)

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The rotated image: :func:`random_rotate`."""
        return random_rotate(key, image, max_degrees=self.max_degrees)


@dataclasses.dataclass(frozen=True, repr=False)
class ColorJitter(_Transform):
    """:func:`color_jitter` as a hashable config: ``ColorJitter(brightness, contrast)``.

    Examples:
      >>> fundl.augment.ColorJitter(brightness=0.2, contrast=0.1)
      ColorJitter(brightness=0.2, contrast=0.1)
    """

    brightness: float = 0.0
    contrast: float = 0.0
    needs_floating: ClassVar[bool] = True

    def __post_init__(self) -> None:
        brightness = check_number("ColorJitter", "brightness", self.brightness, low=0.0)
        contrast = check_number("ColorJitter", "contrast", self.contrast, low=0.0, high=1.0)
        object.__setattr__(self, "brightness", brightness)
        object.__setattr__(self, "contrast", contrast)

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The jittered image: :func:`color_jitter`."""
        return color_jitter(key, image, brightness=self.brightness, contrast=self.contrast)


@dataclasses.dataclass(frozen=True, repr=False)
class Cutout(_Transform):
    """:func:`cutout` as a hashable config: ``Cutout(size)(key, image)``.

    Examples:
      >>> cut, image = fundl.augment.Cutout(2), jnp.arange(1.0, 10.0).reshape(3, 3, 1)
      >>> cut, bool(jnp.all(cut(0, image) == fundl.augment.cutout(0, image, size=2)))
      (Cutout(2), True)
    """

    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", check_int("Cutout", "size", self.size))

    def __call__(self, key: Any, image: jax.Array) -> jax.Array:
        """The image with a square cut out: :func:`cutout`."""
        return cutout(key, image, size=self.size)
