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


def test_accuracy_errors():
    with pytest.raises(
        ValueError,
        match=r"accuracy: integer labels must have shape \(4,\) \(scores without the class axis\), got \(3,\)",
    ):
        metrics.accuracy(jnp.ones((4, 2)), jnp.zeros(3, jnp.int32))
    with pytest.raises(
        ValueError,
        match=r"accuracy: one-hot targets must have the scores' shape \(4, 2\), got \(4, 3\)",
    ):
        metrics.accuracy(jnp.ones((4, 2)), jnp.ones((4, 3)))


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
