"""fundl.metrics: accuracy against counts done by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fundl import metrics


def test_accuracy_with_labels_one_hot_and_binary():
    scores = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = jnp.array([1, 0, 0, 0])
    np.testing.assert_allclose(metrics.accuracy(scores, labels), 0.75)
    np.testing.assert_allclose(metrics.accuracy(scores, jnp.eye(2)[labels]), 0.75)
    probs = jnp.array([[0.9], [0.2], [0.6]])
    np.testing.assert_allclose(metrics.accuracy(probs, jnp.array([[1.0], [1.0], [1.0]])), 2 / 3)


def test_binary_probabilities_against_float_labels():
    # Sigmoid outputs of 4 examples, as a researcher holds them: one column.
    p = jnp.array([[0.9], [0.2], [0.8], [0.95]])
    np.testing.assert_allclose(metrics.accuracy(p, jnp.array([1.0, 0.0, 0.0, 0.0])), 0.5)
    np.testing.assert_allclose(metrics.accuracy(p, jnp.array([[1.0], [0.0], [1.0], [1.0]])), 1.0)
    # float targets in [0, 1] are thresholded at 0.5, as argmax reads probability targets
    np.testing.assert_allclose(metrics.accuracy(p, jnp.array([0.7, 0.6, 0.9, 0.1])), 0.5)


_SHAPE = r"accuracy: integer labels must have shape \(4,\) \(scores without the class axis\)"
_ONE_D = (
    r"accuracy: scores must be \(N, K\) for K classes or \(N, 1\) binary probabilities, "
    r"got shape \(4,\); a 1-D vector is ambiguous: pass scores\[:, None\] for N binary "
    r"probabilities or scores\[None\] for one example's K scores"
)


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        (jnp.ones((4, 2)), jnp.zeros(3, jnp.int32), _SHAPE + r", got \(3,\)$"),
        (
            jnp.ones((4, 2)),
            jnp.ones((4, 3)),
            r"accuracy: one-hot targets must have the scores' shape \(4, 2\), got \(4, 3\)",
        ),
        # integer one-hot rows: the message says one-hot targets must be float
        (
            jnp.ones((4, 2)),
            jnp.eye(2, dtype=jnp.int32)[jnp.array([0, 1, 1, 0])],
            _SHAPE
            + r", got \(4, 2\); one-hot targets must be float, got int32: pass y.astype\(float\)",
        ),
        # a 1-D vector: N binary probabilities, or one example's K scores? Either way,
        # it was read as one example with one-hot float labels (0.0 for 0.5 right).
        (jnp.array([0.9, 0.2, 0.8, 0.95]), jnp.array([1.0, 0.0, 0.0, 0.0]), _ONE_D),
        (jnp.array([0.9, 0.2, 0.8, 0.95]), jnp.array([1, 0, 0, 0]), _ONE_D),
        (jnp.array(0.9), jnp.array(1), r"accuracy: scores must be \(N, K\).*got shape \(\)"),
        # logits where probabilities belong: thresholded at 0.5, they would score silently
        (
            jnp.array([[2.0], [-1.0], [0.3], [0.7]]),
            jnp.array([1, 0, 0, 1]),
            (
                r"accuracy: binary scores \(N, 1\) must lie in \[0, 1\], got values in "
                r"\[-1, 2\] \(2 outside\); pass jax.nn.sigmoid\(logits\), not logits"
            ),
        ),
        (
            jnp.array([[0.9], [0.1], [0.3], [0.7]]),
            jnp.array([1.0, -1.0, 0.0, 2.0]),
            (
                r"accuracy: float binary labels must lie in \[0, 1\], got values in "
                r"\[-1, 2\] \(2 outside\); pass 0/1 labels"
            ),
        ),
        (
            jnp.array([[0.9], [0.1], [0.3], [0.7]]),
            jnp.array([1, 0, 0, 2]),
            r"accuracy: binary labels must be in \[0, 2\) for 2 classes, got values in \[0, 2\]",
        ),
    ],
)
def test_accuracy_errors(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        metrics.accuracy(scores, labels)


def test_traced_binary_values_are_not_checked():
    # Under jit nothing can be read (documented): a logit is thresholded at 0.5 as it
    # comes, so the positive logit 0.3 counts as class 0.
    logits = jnp.array([[2.0], [-1.0], [0.3], [0.7]])
    np.testing.assert_allclose(jax.jit(metrics.accuracy)(logits, jnp.array([1, 0, 1, 1])), 0.75)
    nan_probs = jnp.array([[0.9], [jnp.nan]])  # NaN is not "outside [0, 1]": NaN out
    assert np.isnan(metrics.accuracy(nan_probs, jnp.array([1.0, 0.0])))


def test_binary_output_with_integer_labels_of_shape_n():
    probs = jnp.array([[0.9], [0.2], [0.6], [0.4]])
    np.testing.assert_allclose(metrics.accuracy(probs, jnp.array([1, 0, 1, 0])), 1.0)
    np.testing.assert_allclose(metrics.accuracy(probs, jnp.array([1, 1, 1, 1])), 0.5)
    with pytest.raises(
        ValueError,
        match=r"accuracy: binary labels must be in \[0, 2\) for 2 classes, got values in \[0, 3\]",
    ):
        metrics.accuracy(probs, jnp.array([1, 0, 3, 0]))


def test_labels_out_of_range_are_an_error_not_a_score():
    with pytest.raises(
        ValueError,
        match=r"accuracy: labels must be in \[0, 2\) for 2 classes, got values in \[0, 5\]",
    ):
        metrics.accuracy(jnp.ones((4, 2)), jnp.array([0, 5, 1, 1]))


def test_nan_scores_give_nan_not_a_perfect_score():
    scores = jnp.full((4, 3), jnp.nan)
    assert np.isnan(metrics.accuracy(scores, jnp.zeros(4, jnp.int32)))
    one_bad = jnp.eye(3)[jnp.array([0, 1, 2, 0])].at[3, 1].set(jnp.nan)
    assert np.isnan(metrics.accuracy(one_bad, jnp.array([0, 1, 2, 0])))
    assert np.isnan(jax.jit(metrics.accuracy)(scores, jnp.zeros(4, jnp.int32)))
    # a NaN target is no label either: NaN, not a score from argmax's pick
    targets = jnp.eye(3)[jnp.array([0, 1, 2, 0])].at[0, 0].set(jnp.nan)
    assert np.isnan(metrics.accuracy(jnp.eye(3)[jnp.array([0, 1, 2, 0])], targets))


def test_monitor_ties_and_nan():
    monitor = metrics.Monitor("val_loss", "min")
    assert not monitor.improved(0.5, best=0.5)  # a tie is not an improvement
    assert monitor.improved(0.49, best=0.5)
    assert not monitor.improved(float("nan"), best=None)
    assert monitor.improved(3.0, best=None)
    assert monitor.best([(1, 0.5), (2, float("nan")), (3, 0.4), (4, 0.4)]) == (3, 0.4)
    assert metrics.Monitor("acc", "max", min_delta=0.1).best([(1, 0.5), (2, 0.55), (3, 0.7)]) == (
        3,
        0.7,
    )
    assert monitor.best([(1, float("nan"))]) is None
    with pytest.raises(
        ValueError, match=r"Monitor: mode must be one of 'min', 'max'; got 'lowest'"
    ):
        metrics.Monitor("val_loss", "lowest")
    with pytest.raises(
        ValueError, match=r"Monitor: min_delta must be a finite number in \[0, inf\); got -1"
    ):
        metrics.Monitor("val_loss", min_delta=-1)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: metrics.accuracy(None, jnp.array([0])),
            TypeError,
            r"accuracy: scores must be an array, got NoneType",
        ),
        (
            lambda: metrics.accuracy(jnp.ones((2, 2)), {"y": 1}),
            TypeError,
            r"accuracy: labels must be an array, got dict",
        ),
        (
            lambda: metrics.accuracy(jnp.ones((2, 2)), "ab"),
            TypeError,
            r"accuracy: labels must be an array, got str",
        ),
        (
            lambda: metrics.Monitor("loss").improved("0.5", None),
            ValueError,
            r"Monitor.improved: value must be a scalar metric value, got '0.5'",
        ),
        (
            lambda: metrics.Monitor("loss").improved(0.5, "x"),
            ValueError,
            r"Monitor.improved: best must be a scalar",
        ),
        (
            lambda: metrics.Monitor("loss").best([0.5, 0.4]),
            ValueError,
            r"Monitor.best: values must be \(tag, value\) pairs, got an item 0.5",
        ),
    ],
)
def test_bad_input_table(call, error, match):
    with pytest.raises(error, match=match):
        call()
