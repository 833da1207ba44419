"""Prefetching: the next batches' host-to-device copies run while the current step does."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import jax

from fundl._validate import check_int

__all__ = ["prefetch_to_device"]


def prefetch_to_device(
    iterator: Iterable[Any], size: int = 2, *, sharding: Any = None
) -> Iterator[Any]:
    """Yield the batches of ``iterator``, keeping ``size`` of them already sent to the device.

    Each batch is passed to ``jax.device_put`` (the default device, or ``sharding``, e.g.
    a ``NamedSharding`` splitting the batch over devices) ``size`` batches before the
    consumer asks for it. ``device_put`` is asynchronous, so the host-to-device copy of
    the next batches overlaps the step on the current one; no thread is needed. The
    batches come in the order ``iterator`` gives them; an exception it raises (or that
    ``device_put`` raises on a batch) reaches the consumer after the batches before it,
    where a plain loop over ``iterator`` would meet it.

    Args:
      iterator: any iterable of batch pytrees (e.g. :func:`fundl.data.batches`).
      size: how many batches to keep in flight, ≥ 1.
      sharding: a ``jax.sharding.Sharding`` or a ``jax.Device`` for every leaf, or None
        for the default device.

    Returns:
      an iterator of the same batches, as jax arrays on the device.

    Examples:
      >>> data = {"x": np.zeros((5, 2), np.float32), "y": np.arange(5)}
      >>> for batch in fundl.data.prefetch_to_device(fundl.data.batches(data, 2)):
      ...     print(isinstance(batch["x"], jax.Array), batch["y"].tolist())
      True [0, 1]
      True [2, 3]
      True [4]

      In a training loop, the step's ``params, opt_state, metrics = step(params,
      opt_state, batch)`` runs on one batch while the next ones are copied.
    """
    size = check_int("prefetch_to_device", "size", size, low=1)
    if not (sharding is None or isinstance(sharding, (jax.sharding.Sharding, jax.Device))):
        raise ValueError(
            f"prefetch_to_device: sharding must be a jax.sharding.Sharding, a jax.Device "
            f"or None, got {sharding!r}"
        )
    try:
        it = iter(iterator)
    except TypeError:
        raise ValueError(
            f"prefetch_to_device: iterator must be an iterable of batches, got {iterator!r}"
        ) from None
    return _prefetch(it, size, sharding)


def _prefetch(it: Iterator[Any], size: int, sharding: Any) -> Iterator[Any]:
    queue: deque = deque()
    # Once the producer stops — exhausted, or raising — it is never asked again (an
    # iterator may yield more after a StopIteration; a plain ``for`` loop never sees it),
    # and its exception is raised only after the batches it gave before it, in the
    # order a plain loop over the producer would see them.
    done = False
    error: Exception | None = None

    def enqueue(k: int) -> None:
        nonlocal done, error
        for _ in range(k):
            if done:
                return
            try:
                queue.append(jax.device_put(next(it), sharding))
            except StopIteration:
                done = True
            except Exception as err:  # noqa: BLE001 - re-raised below, in its place
                done, error = True, err

    enqueue(size)
    while queue:
        batch = queue.popleft()
        enqueue(1)  # before yielding, so `size` batches travel while the consumer works
        yield batch
    if error is not None:
        raise error
