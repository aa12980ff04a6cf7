"""Training batches and evaluation passes over a :class:`~lagrangian_jax.data.Split`.

Training batches come from :func:`batch_indices`, a pure function of
``(num_examples, batch_size, step, seed)``, so a resumed run sees exactly the
batches it would have seen without the interruption. :func:`iterate_eval` pads the
last batch and returns a mask so a jitted eval step compiles once. Both work on
in-memory and lazy splits alike through :func:`get_batch`.
"""

from __future__ import annotations

from collections.abc import Iterator
import functools

import numpy as np

from lagrangian_jax.data.base import Split
from lagrangian_jax.errors import DataError


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full training batches per epoch (the incomplete last batch is dropped).

  >>> steps_per_epoch(10, 3)
  3
  """
  if batch_size < 1 or num_examples < 1:
    raise DataError(f"batch_size ({batch_size}) and num_examples ({num_examples}) must be >= 1.")
  if batch_size > num_examples:
    raise DataError(
      f"batch_size {batch_size} is larger than the {num_examples} training "
      "examples; use a smaller batch_size or more data."
    )
  return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  # Cached because every step of an epoch needs the same permutation; the
  # cache is invisible to callers (read-only result), so batch_indices stays pure.
  perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
  perm.flags.writeable = False
  return perm


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
  """Indices of the training batch at global ``step``; a pure function.

  Epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(N)`` in
  consecutive slices of ``batch_size``; the incomplete tail is dropped, so
  a resumed run at step ``s`` gets exactly the batch it would have had.

  >>> batch_indices(10, 4, step=0, seed=0).shape
  (4,)
  >>> bool((batch_indices(10, 4, 3, 0) == batch_indices(10, 4, 3, 0)).all())
  True
  """
  per_epoch = steps_per_epoch(num_examples, batch_size)
  if step < 0 or seed < 0:
    raise DataError(f"step ({step}) and seed ({seed}) must be >= 0.")
  epoch, pos = divmod(int(step), per_epoch)
  perm = _epoch_permutation(int(num_examples), int(seed), epoch)
  return perm[pos * batch_size : (pos + 1) * batch_size].copy()


def get_batch(
  split: Split, indices: np.ndarray, raw: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """Images float32 (k,H,W,C) and labels int32 (k,) of ``indices`` in ``split``.

  Works for in-memory and lazy splits (a lazy split is read once). ``raw=True``: a lazy
  split's images as uint8 pixels, for ``base.normalise_on_device`` in the jitted step
  (in-memory images are float32 either way).

  >>> from lagrangian_jax.data import load_dataset
  >>> ds = load_dataset("mnist_5k")
  >>> get_batch(ds.train, np.arange(4))[0].shape
  (4, 28, 28, 1)
  """
  indices = np.asarray(indices, np.int64)
  if hasattr(split.images, "fetch"):
    images, labels = split.images.fetch(indices, raw=raw)
    return images, np.asarray(labels, np.int32)
  images, labels = split.images[indices], split.labels[indices]
  return np.asarray(images, np.float32), np.asarray(labels, np.int32)


def iterate_eval(
  split: Split, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every example once, in order, as fixed-size ``(images, labels, mask)``.

  The last batch is zero-padded to ``batch_size`` and ``mask`` (bool) marks
  the real rows, so a jitted eval step sees one shape and compiles once.

  >>> s = Split(np.zeros((5, 2, 2, 1), np.float32), np.arange(5, dtype=np.int32))
  >>> [int(m.sum()) for _, _, m in iterate_eval(s, 4)]
  [4, 1]
  """
  if batch_size < 1:
    raise DataError(f"eval batch_size must be >= 1, got {batch_size}.")
  n = len(split.labels)
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    images, labels = get_batch(split, idx)
    pad = batch_size - len(idx)
    mask = np.arange(batch_size) < len(idx)
    if pad:
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
      labels = np.concatenate([labels, np.zeros((pad,), np.int32)])
    yield images, labels, mask
