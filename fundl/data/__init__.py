"""Data: checks, mini-batches, splits, standardization, one-hot labels and offline loaders.

A dataset is a pytree of arrays whose leaves share a leading dimension n, the examples:
``{"x": (n, 64) float32, "y": (n,) int32}`` or ``(x, y)``. A batch is the same pytree
with a leading dimension of at most ``batch_size``. :func:`validate` checks a dataset
once before training (shared leading dim, finite floats, integers that fit the dtype
JAX will store them in).

The order of an epoch is a pure function of ``(key, epoch)``:
``jax.random.permutation(jax.random.fold_in(key, epoch), n)``. So :func:`batches` (a
host-side iterator) and :func:`epoch_batches` (the whole epoch as one array pytree, for
``jit`` and ``lax.scan``) agree, and a run resumes at any cursor ``(epoch, start)``.

Nothing here downloads anything: :func:`load_digits` reads the 8×8 digits that ship
inside scikit-learn, and :func:`load_idx` / :func:`load_npz` read files you already have.

Modules: ``dataset`` (what a dataset is: ``num_examples``, ``validate``), ``batching``
(``num_batches``, ``batches``, ``epoch_batches``, ``weighted_mean``), ``prefetch``
(``prefetch_to_device``), ``transforms`` (``split``, ``standardize_stats``,
``standardize``, ``one_hot``) and ``loaders`` (``load_digits``, ``load_idx``,
``load_npz``).
"""

from fundl.data.batching import batches, epoch_batches, num_batches, weighted_mean
from fundl.data.dataset import num_examples, validate
from fundl.data.loaders import load_digits, load_idx, load_npz
from fundl.data.prefetch import prefetch_to_device
from fundl.data.transforms import one_hot, split, standardize, standardize_stats

__all__ = [
    "num_examples",
    "validate",
    "num_batches",
    "batches",
    "epoch_batches",
    "weighted_mean",
    "split",
    "standardize_stats",
    "standardize",
    "one_hot",
    "prefetch_to_device",
    "load_digits",
    "load_idx",
    "load_npz",
]
