"""Deprecated alias of :mod:`fundl.initializers`.

The module was renamed so that ``initializers.he_normal`` no longer reads like a model's
``init``; importing ``fundl.init`` still works and warns once.
"""

import warnings

from fundl.initializers import *  # noqa: F403
from fundl.initializers import __all__  # noqa: F401

warnings.warn(
    "fundl.init is now fundl.initializers (as jax.nn.initializers); fundl.init is a "
    "deprecated alias",
    DeprecationWarning,
    stacklevel=2,
)
