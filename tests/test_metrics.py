"""fundl.metrics: accuracy against counts done by hand."""

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
