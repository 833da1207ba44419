"""fundl.augment: each transform's sampling statistics over many keys, exact values on
small known images, dtypes, the Augment layer in training and evaluation, and errors.

Each statistics test runs a transform over N keys in one compiled ``vmap`` and reads
the random draw back from the output (coordinate images: channel 0 holds the row and
channel 1 the column, so a moved pixel says where it came from).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import augment
from fundl.augment import (
    Augment,
    ColorJitter,
    Cutout,
    RandomCrop,
    RandomFlip,
    RandomRotate,
    RandomTranslate,
    batched,
    color_jitter,
    cutout,
    mixup,
    random_crop,
    random_flip,
    random_rotate,
    random_translate,
)
from fundl.nn import Dense, Sequential

N = 2000
KEYS = jax.random.split(jax.random.key(0), N)
KEY = jax.random.key(0)
IMAGE = jnp.ones((4, 4, 3))


def _uniform(*shape):
    """Test data from numpy (an eager jax.random call compiles), the same in every run."""
    return np.random.default_rng(0).uniform(size=shape).astype(np.float32)


def _sample(transform, image):
    """transform(k, image) for each of the N keys, in one compiled call (numpy out); the
    same keys give the same images."""
    run = jax.jit(jax.vmap(transform, in_axes=(0, None)))
    out = run(KEYS, image)
    chex.assert_trees_all_equal(out, run(KEYS, image))
    return np.asarray(out)


def _near(values, expected, sd):
    """The sample mean lies within 4 standard errors of the expected mean."""
    assert abs(np.mean(values) - expected) < 4 * sd / np.sqrt(len(values)), np.mean(values)


def _coords(h, w, offset=1.0):
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols], axis=-1).astype(np.float32) + offset


# --- flip --------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flip_rate_and_values(p):
    image = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    out = _sample(RandomFlip(p), jnp.asarray(image))
    flipped = out[:, 0, 0, 0] == 2.0
    _near(flipped, p, np.sqrt(p * (1 - p)))
    np.testing.assert_array_equal(out[flipped], np.broadcast_to(image[:, ::-1], out[flipped].shape))
    np.testing.assert_array_equal(out[~flipped], np.broadcast_to(image, out[~flipped].shape))


def test_flip_reverses_the_columns_and_p_zero_is_the_identity():
    image = jnp.arange(12.0).reshape(2, 3, 2)
    np.testing.assert_array_equal(random_flip(3, image, p=1.0), image[:, ::-1, :])
    np.testing.assert_array_equal(random_flip(3, image, p=0.0), image)


# --- crop and translate ------------------------------------------------------------


def _check_shifts(out, image, max_shift):
    """Recover each key's shift from the centre pixel; check uniformity and exact windows."""
    h, w, _ = image.shape
    cy, cx = h // 2, w // 2
    shifts = np.stack([cy + 1 - out[:, cy, cx, 0], cx + 1 - out[:, cy, cx, 1]], 1).astype(int)
    for axis, m in enumerate(max_shift):
        values = shifts[:, axis]
        assert set(values) == set(range(-m, m + 1))
        k = 2 * m + 1
        frequencies = np.bincount(values + m, minlength=k) / len(values)
        assert np.all(np.abs(frequencies - 1 / k) < 4 * np.sqrt((1 / k) * (1 - 1 / k) / N))
        _near(values, 0.0, np.sqrt((k * k - 1) / 12))
    assert len({tuple(s) for s in shifts}) == np.prod([2 * m + 1 for m in max_shift])
    my, mx = max_shift
    padded = np.pad(image, ((my, my), (mx, mx), (0, 0)))  # zeros enter
    for (sy, sx), o in zip(shifts, out):
        np.testing.assert_array_equal(o, padded[my - sy : my - sy + h, mx - sx : mx - sx + w])


def test_crop_offsets_are_uniform_and_each_crop_is_a_window_of_the_padded_image():
    image = _coords(5, 5)
    _check_shifts(_sample(RandomCrop(2), jnp.asarray(image)), image, (2, 2))


def test_translate_shifts_are_uniform_per_axis_and_each_is_a_zero_filled_slice():
    image = _coords(5, 5)
    _check_shifts(_sample(RandomTranslate((1, 2)), jnp.asarray(image)), image, (1, 2))


def test_translate_by_the_documented_draw_equals_a_slice():
    image = np.arange(20.0, dtype=np.float32).reshape(4, 5, 1)

    @jax.jit
    def run(key):
        shift = jax.random.randint(key, (2,), jnp.array([-2, -2]), jnp.array([3, 3]))
        offset = jax.random.randint(key, (2,), 0, 5)
        translated = random_translate(key, image, max_shift=2)
        return shift, translated, offset, random_crop(key, image, padding=2, fill=7.0)

    (sy, sx), translated, (oy, ox), cropped = (np.asarray(a) for a in run(jax.random.key(11)))
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(translated, padded[2 - sy : 6 - sy, 2 - sx : 7 - sx])
    # a crop is a translation with the padding's fill: shift = padding − offset
    filled = np.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=7.0)
    np.testing.assert_array_equal(cropped, filled[oy : oy + 4, ox : ox + 5])


# --- rotation ----------------------------------------------------------------------


def _rotate_reference(image, theta):
    """The docstring's formula, with a naive bilinear loop (zeros outside)."""
    h, w, c = image.shape
    out = np.zeros((h, w, c))
    for i in range(h):
        for j in range(w):
            y, x = i - (h - 1) / 2, j - (w - 1) / 2
            r = (h - 1) / 2 + x * np.sin(theta) + y * np.cos(theta)
            q = (w - 1) / 2 + x * np.cos(theta) - y * np.sin(theta)
            for rr in (int(np.floor(r)), int(np.floor(r)) + 1):
                for qq in (int(np.floor(q)), int(np.floor(q)) + 1):
                    if 0 <= rr < h and 0 <= qq < w:
                        out[i, j] += (1 - abs(r - rr)) * (1 - abs(q - qq)) * image[rr, qq]
    return out


def test_rotation_angles_are_uniform_and_the_image_follows_the_formula():
    noise = _uniform(7, 7, 1)
    image = np.concatenate([_coords(7, 7, offset=0.0), noise], axis=-1)
    out = _sample(RandomRotate(30.0), jnp.asarray(image))
    # bilinear interpolation of the coordinates is exact near the centre (3, 3): the
    # pixel right of it (3, 5) reads the source (3 + 2 sin θ, 3 + 2 cos θ), the one above
    # it (1, 3) reads (3 − 2 cos θ, 3 + 2 sin θ); θ > 0 brings what was below the centre
    # to its right: counter-clockwise as displayed
    right = np.degrees(np.arctan2(out[:, 3, 5, 0] - 3, out[:, 3, 5, 1] - 3))
    above = np.degrees(np.arctan2(out[:, 1, 3, 1] - 3, 3 - out[:, 1, 3, 0]))
    np.testing.assert_allclose(right, above, atol=1e-3)
    np.testing.assert_allclose(np.hypot(out[:, 3, 5, 0] - 3, out[:, 3, 5, 1] - 3), 2, rtol=1e-5)
    assert np.all(np.abs(right) <= 30 + 1e-3) and np.max(np.abs(right)) > 29.5
    _near(right, 0.0, 30 / np.sqrt(3))
    _near(np.abs(right), 15.0, 30 / np.sqrt(12))
    for o, theta in zip(out[:4], np.radians(right[:4])):
        np.testing.assert_allclose(o, _rotate_reference(image, theta), atol=1e-4)


def test_rotation_by_zero_is_the_identity():
    image = _uniform(4, 5, 2)
    rotate = jax.jit(functools.partial(random_rotate, max_degrees=0.0))
    np.testing.assert_array_equal(rotate(jax.random.key(1), image), image)


# --- colour jitter -----------------------------------------------------------------


def test_jitter_brightness_and_contrast_follow_their_distributions():
    x = _uniform(4, 4, 2)
    out = _sample(ColorJitter(0.1, 0.5), jnp.asarray(x))
    delta = out.mean(axis=(1, 2, 3)) - x.mean()
    dx = (x - x.mean()).ravel()
    dy = out.reshape(N, -1) - out.reshape(N, -1).mean(axis=1, keepdims=True)
    factor = dy @ dx / (dx @ dx)
    # y = m + f (x + δ − m) with m = mean(x) + δ: every pixel, one δ and one f per image
    expected = x.mean() + delta[:, None] + factor[:, None] * dx[None, :]
    np.testing.assert_allclose(out.reshape(N, -1), expected, atol=2e-6)
    assert np.all(np.abs(delta) <= 0.1 + 1e-6) and np.max(np.abs(delta)) > 0.099
    _near(delta, 0.0, 0.1 / np.sqrt(3))
    assert np.all(np.abs(factor - 1) <= 0.5 + 1e-5) and np.max(np.abs(factor - 1)) > 0.49
    _near(factor, 1.0, 0.5 / np.sqrt(3))
    assert abs(np.corrcoef(delta, factor)[0, 1]) < 4 / np.sqrt(N)  # two independent keys


def test_contrast_keeps_each_images_mean():
    x = _uniform(3, 3, 2)
    out = _sample(ColorJitter(contrast=0.8), jnp.asarray(x))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(), atol=1e-6)
    assert np.std(out[:, 0, 0, 0]) > 0.01  # yet the pixels move


# --- cutout ------------------------------------------------------------------------


def test_cutout_centres_are_uniform_and_the_square_is_clipped_at_the_borders():
    out = _sample(Cutout(3), jnp.ones((8, 8, 2), jnp.uint8))
    assert out.dtype == np.uint8
    cut = out == 0
    np.testing.assert_array_equal(cut[..., 0], cut[..., 1])  # every channel
    rows, cols = cut[..., 0].any(axis=2), cut[..., 0].any(axis=1)
    np.testing.assert_array_equal(cut[..., 0], rows[:, :, None] & cols[:, None, :])  # a rectangle
    for extent in (rows, cols):  # the centre from the extent of the cut, per axis
        first, last = extent.argmax(axis=1), 7 - extent[:, ::-1].argmax(axis=1)
        centre = np.where(first == 0, last - 1, first + 1)
        np.testing.assert_array_equal(first, np.maximum(centre - 1, 0))
        np.testing.assert_array_equal(last, np.minimum(centre + 1, 7))
        frequencies = np.bincount(centre, minlength=8) / N
        assert np.all(np.abs(frequencies - 1 / 8) < 4 * np.sqrt(1 / 8 * 7 / 8 / N))
    inside = (rows.sum(1) == 3) & (cols.sum(1) == 3)
    np.testing.assert_array_equal(cut[inside, :, :, 0].sum(axis=(1, 2)), 9)  # size² pixels
    _near(inside, (6 / 8) ** 2, np.sqrt(0.5625 * 0.4375))


# --- mixup -------------------------------------------------------------------------


def test_mixup_lambda_follows_beta_and_the_batch_is_mixed_with_one_permutation():
    x = _uniform(8, 3)
    y = jnp.eye(8)
    run = jax.jit(jax.vmap(lambda k: mixup(k, x, y, alpha=0.4)))
    x_mix, y_mix = (np.asarray(a) for a in run(KEYS))
    # y = I, so ỹ = λI + (1 − λ)P is the mixing matrix itself: x̃ = ỹ x for every key
    np.testing.assert_allclose(x_mix, y_mix @ np.asarray(x), atol=1e-5)
    np.testing.assert_allclose(y_mix.sum(axis=2), 1.0, atol=1e-6)  # rows: soft labels
    np.testing.assert_allclose(y_mix.sum(axis=1), 1.0, atol=1e-6)  # columns: P permutes
    lam = y_mix.diagonal(axis1=1, axis2=2).min(axis=1)  # a row i with π(i) ≠ i holds λ
    assert np.all((lam >= 0) & (lam <= 1))
    _near(lam, 0.5, np.sqrt(1 / 7.2))
    assert abs(np.var(lam) - 1 / 7.2) < 4 * 0.0020  # Var Beta(α, α) = 1/(4(2α + 1))
    off = y_mix - lam[:, None, None] * np.eye(8)  # (1 − λ)P
    fixed = np.abs(off.diagonal(axis1=1, axis2=2) - (1 - lam[:, None])) < 1e-5
    _near(fixed.sum(axis=1), 1.0, 1.0)  # a uniform permutation fixes one point on average


# --- dtypes, determinism, batching -------------------------------------------------

GEOMETRIC = [RandomFlip(), RandomCrop(1), RandomTranslate((1, 2)), Cutout(2)]
ALL = GEOMETRIC + [RandomRotate(15.0), ColorJitter(0.2, 0.3)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.uint8])
def test_shape_and_dtype_are_kept(dtype):
    image = jax.ShapeDtypeStruct((5, 4, 3), dtype)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    for transform in ALL if dtype != jnp.uint8 else GEOMETRIC:
        out = jax.eval_shape(transform, key, image)
        assert (out.shape, out.dtype) == ((5, 4, 3), dtype), transform
    if dtype != jnp.uint8:
        x_mix, y_mix = jax.eval_shape(
            functools.partial(mixup, alpha=0.2),
            key,
            jax.ShapeDtypeStruct((4, 5, 4, 3), dtype),
            jax.ShapeDtypeStruct((4, 10), dtype),
        )
        assert (x_mix.dtype, y_mix.dtype, x_mix.shape) == (dtype, dtype, (4, 5, 4, 3))


def test_bfloat16_is_computed_in_float32():
    image = jnp.asarray(_uniform(5, 5, 2), jnp.bfloat16)
    transforms = (RandomRotate(20.0), ColorJitter(0.2, 0.4))

    @jax.jit
    def run(key):
        return [(t(key, image), t(key, image.astype(jnp.float32))) for t in transforms]

    for low, high in run(jax.random.key(3)):
        assert low.dtype == jnp.bfloat16
        np.testing.assert_array_equal(low, high.astype(jnp.bfloat16))


def test_batched_gives_each_example_its_split_of_the_key():
    images = _uniform(3, 5, 5, 1)
    crop = batched(functools.partial(random_crop, padding=1))

    @jax.jit
    def run(key):
        keys = jax.random.split(key, 3)
        one_by_one = jnp.stack([random_crop(keys[i], images[i], padding=1) for i in range(3)])
        seeded = batched(RandomCrop(1))(3, images)  # an int seed is a key
        return crop(key, images), one_by_one, batched(RandomCrop(1))(key, images), seeded

    out, one_by_one, from_config, seeded = run(jax.random.key(3))
    np.testing.assert_array_equal(out, one_by_one)
    np.testing.assert_array_equal(out, from_config)
    np.testing.assert_array_equal(out, seeded)


# --- the Augment layer -------------------------------------------------------------


def test_evaluation_is_the_identity_and_needs_no_key():
    layer = Augment((RandomCrop(2), RandomFlip(), Cutout(2)))
    # one unbatched image too: the layers after Augment may take one at inference
    for x in (jnp.ones((2, 6, 6, 3)), jnp.ones((1, 6, 6, 3), jnp.uint8), jnp.ones((6, 6, 3))):
        assert layer.apply({}, x) is x
        y, state = layer.apply_with_state({}, {}, x, key=jax.random.key(0), train=False)
        assert y is x and state == {}


def test_example_i_of_a_batch_uses_split_i_of_the_key():
    layer = Augment((RandomTranslate(1), RandomFlip()))
    images = _uniform(3, 4, 4, 2)

    @jax.jit
    def run(key):
        keys = jax.random.split(key, 3)
        by_hand = []
        for i in range(3):
            k_translate, k_flip = jax.random.split(keys[i])  # a split per transform
            by_hand.append(
                random_flip(k_flip, random_translate(k_translate, images[i], max_shift=1))
            )
        batch = layer.apply({}, images, key=key, train=True)
        return batch, jnp.stack(by_hand)

    batch, by_hand = run(jax.random.key(9))
    np.testing.assert_array_equal(batch, by_hand)
    assert not np.array_equal(batch, images)


def test_a_grayscale_batch_with_its_channel_axis_keeps_examples_apart():
    # Example i is all i + 1. Without the channel axis, (N, H, W) was taken as one image
    # (H=N, W=H, C=W) and the crop shifted examples into each other's slots; now that is
    # an error, and with x[..., None] a crop only ever brings in the zero padding.
    x = jnp.arange(1.0, 5.0)[:, None, None] * jnp.ones((4, 6, 6))
    layer = Augment(RandomCrop(2))
    with pytest.raises(ValueError, match=r"got shape \(4, 6, 6\); a grayscale batch"):
        layer.apply({}, x, key=0, train=True)
    outs = jax.jit(jax.vmap(lambda k: layer.apply({}, x[..., None], key=k, train=True)))(KEYS[:50])
    for i in range(4):
        assert set(np.unique(outs[:, i])) <= {0.0, i + 1.0}
    assert np.any(outs == 0.0)  # some crops did move


def test_examples_and_transforms_draw_independently():
    # two flips with one key would cancel; with their own keys the net flip rate is 1/2
    x = jnp.broadcast_to(jnp.arange(2.0).reshape(1, 1, 2, 1), (400, 1, 2, 1))
    layer = Augment((RandomFlip(), RandomFlip()))
    out = jax.jit(lambda x: layer.apply({}, x, key=4, train=True))(x)
    _near(np.asarray(out)[:, 0, 0, 0] == 1.0, 0.5, 0.5)


def test_integer_images_keep_their_values_and_dtype():
    x = np.random.default_rng(1).integers(1, 255, size=(3, 6, 6, 2), dtype=np.uint8)
    layer = Augment((RandomFlip(), RandomCrop(1), RandomTranslate(1), Cutout(2)))
    y = jax.jit(lambda x: layer.apply({}, x, key=0, train=True))(x)
    assert y.dtype == jnp.uint8
    assert set(np.unique(y)) <= set(np.unique(x)) | {0} and np.any(y == 0)


def test_inside_a_sequential_in_training_only():
    model = Sequential([Augment((RandomCrop(1), RandomFlip())), Dense(2)])
    params = model.init(0, (4, 4, 3))
    assert model.names == ("augment1", "dense1") and list(params) == ["dense1"]
    x = _uniform(2, 4, 4, 3)
    augment, dense = model.layers

    @jax.jit
    def run(key):
        augmented = augment.apply({}, x, key=jax.random.split(key, 2)[0], train=True)
        return (
            model.apply(params, x),
            dense.apply(params["dense1"], x),
            model.apply(params, x, key=key, train=True),
            dense.apply(params["dense1"], augmented),
        )

    evaluation, expected, training, expected_training = run(jax.random.key(5))
    np.testing.assert_allclose(evaluation, expected, rtol=1e-6)
    np.testing.assert_allclose(training, expected_training, rtol=1e-6)
    assert not np.allclose(training, evaluation)


def test_the_package_exports_each_modules_public_names():
    modules = [augment.transforms, augment.mixing, augment.layer]
    assert sorted(augment.__all__) == sorted(n for m in modules for n in m.__all__)
    for module in modules:
        for name in module.__all__:
            assert getattr(augment, name) is getattr(module, name)
            assert getattr(module, name).__module__ == module.__name__, name


def test_configs_are_hashable_and_equal_by_value():
    assert Augment(RandomFlip()) == Augment((RandomFlip(0.5),))
    assert hash(Augment([RandomCrop(2)])) == hash(Augment((RandomCrop(2),)))
    assert RandomTranslate(2).max_shift == (2, 2) and RandomTranslate([1, 3]).max_shift == (1, 3)
    assert repr(Augment((RandomCrop(2), ColorJitter(0.1)))) == (
        "Augment((RandomCrop(padding=2), ColorJitter(brightness=0.1)))"
    )


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: RandomFlip(1.5), ValueError, r"RandomFlip: p must be a finite number in \[0, 1\]"),
        (lambda: RandomCrop(-1), ValueError, r"RandomCrop: padding must be a non-negative"),
        (lambda: RandomCrop(2.0), ValueError, r"RandomCrop: padding must be .*got 2.0"),
        (lambda: RandomTranslate((1, 2, 3)), ValueError, r"RandomTranslate: max_shift must be"),
        (lambda: RandomTranslate(-1), ValueError, r"RandomTranslate: max_shift must be a non-neg"),
        (lambda: RandomRotate(200), ValueError, r"RandomRotate: max_degrees must be .*\[0, 180\]"),
        (lambda: ColorJitter(-0.1), ValueError, r"ColorJitter: brightness must be"),
        (
            lambda: ColorJitter(contrast=1.5),
            ValueError,
            r"ColorJitter: contrast must be .*\[0, 1\]",
        ),
        (lambda: Cutout(0), ValueError, r"Cutout: size must be a positive integer, got 0"),
        (lambda: Augment(()), ValueError, r"Augment: transforms must be a non-empty tuple"),
        (lambda: Augment((Dense(2),)), TypeError, r"Augment: transform 0 \(Dense\(2\)\) is not a"),
        (lambda: Augment(([1],)), TypeError, r"Augment: transform 0 \(\[1\]\) is not a transform"),
        (lambda: random_flip(KEY, IMAGE, p=-1), ValueError, r"random_flip: p must be"),
        (
            lambda: random_crop(KEY, jnp.ones((4, 4))),
            ValueError,
            (
                r"random_crop: expected one .* got shape \(4, 4\); a grayscale image needs a "
                r"channel axis \(image\[\.\.\., None\]\)"
            ),
        ),
        (
            lambda: random_crop(KEY, IMAGE.astype(jnp.uint8), fill=-1),
            ValueError,
            r"random_crop: fill must be an integer in \[0, 255\] for a uint8 image, got -1.0",
        ),
        (  # was cast to inf without a word
            lambda: random_crop(KEY, IMAGE.astype(jnp.float16), fill=1e6),
            ValueError,
            (
                r"random_crop: fill must be a finite number in \[-65504, 65504\] for a float16 "
                r"image \(beyond it the cast gives inf\), got 1000000.0"
            ),
        ),
        (
            lambda: RandomCrop(1, fill=1e39)(KEY, IMAGE),
            ValueError,
            r"random_crop: fill must be a finite number in \[-3.40282e\+38, 3.40282e\+38\] for a float32",
        ),
        (  # was cast to True
            lambda: random_crop(KEY, IMAGE > 0, fill=2),
            ValueError,
            r"random_crop: fill must be 0 or 1 \(False or True\) for a bool image, got 2.0",
        ),
        (lambda: random_translate(KEY, IMAGE[None], max_shift=1), ValueError, r"shape \(1, 4,"),
        (
            lambda: random_rotate(KEY, IMAGE.astype(jnp.uint8), max_degrees=5),
            TypeError,
            r"random_rotate: expected a floating-point image .*, got dtype uint8",
        ),
        (
            lambda: color_jitter(KEY, IMAGE.astype(jnp.int32), brightness=0.1),
            TypeError,
            r"color_jitter: expected a floating-point image",
        ),
        (lambda: cutout(KEY, IMAGE, size=0), ValueError, r"cutout: size must be a positive"),
        (lambda: cutout("k", IMAGE, size=1), ValueError, r"cutout: key must be a PRNG key"),
        (lambda: mixup(KEY, IMAGE, IMAGE[:, 0], alpha=0), ValueError, r"mixup: alpha must be"),
        (
            lambda: mixup(KEY, IMAGE, jnp.arange(4), alpha=0.2),
            ValueError,
            (
                r"mixup: y must be one-hot or soft labels of shape \(N, K\).* got int32 of shape "
                r"\(4,\); convert integer labels with jax.nn.one_hot"
            ),
        ),
        (
            lambda: mixup(KEY, IMAGE, jnp.ones((3, 2)), alpha=0.2),
            ValueError,
            r"mixup: x and y must have the same batch size N",
        ),
        (
            lambda: batched(RandomFlip())(KEY, IMAGE),
            ValueError,
            r"batched\(RandomFlip\(\)\): exp.* a grayscale batch needs a channel axis",
        ),
        (lambda: batched(3), TypeError, r"batched: expected a transform"),
        (
            lambda: Augment(RandomFlip()).apply({}, IMAGE[None], train=True),
            ValueError,
            r"Augment\(\(RandomFlip\(\),\)\): train=True needs a PRNG key",
        ),
        (
            lambda: Augment(RandomFlip()).apply({}, IMAGE[0], key=0, train=True),
            ValueError,
            (
                r"Augment\(\(RandomFlip\(\),\)\): expected a batch of images of shape "
                r"\(N, H, W, C\), got shape \(4, 3\); a grayscale batch \(N, H, W\) needs a "
                r"channel axis: x\[\.\.\., None\]; one image \(H, W, C\): x\[None\]"
            ),
        ),
        (  # one (H, W, C) image or an (N, H, W) grayscale batch? A batch, always.
            lambda: Augment(RandomFlip()).apply({}, IMAGE, key=0, train=True),
            ValueError,
            r"Augment\(\(RandomFlip\(\),\)\): expected a batch .* got shape \(4, 4, 3\)",
        ),
        (
            lambda: Augment(RandomFlip()).output_shape((28, 28)),
            ValueError,
            (
                r"Augment\(\(RandomFlip\(\),\)\): expected images of shape \(H, W, C\) "
                r"\(batch axis optional\), got input_shape \(28, 28\); a grayscale image "
                r"needs a channel axis: \(28, 28, 1\)"
            ),
        ),
        (
            lambda: Augment((RandomFlip(), RandomRotate(5))).apply(
                {}, IMAGE[None].astype(jnp.uint8)
            ),
            TypeError,
            r"Augment\(.*\): expected a floating-point input for RandomRotate\(5.0\)",
        ),
        (
            lambda: Augment(RandomFlip()).apply({}, IMAGE, train=1),
            ValueError,
            r"train must be True or False",
        ),
        (
            lambda: Augment(RandomFlip()).apply({"W": IMAGE}, IMAGE[None]),
            ValueError,
            r"unexpected params\['W'\]",
        ),
    ],
)
def test_bad_input_gives_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()
