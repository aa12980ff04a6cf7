"""Types and helpers shared by every data source: splits, normalisation, carving.

Every source (:mod:`~lagrangian_jax.data.in_memory`, :mod:`~lagrangian_jax.data.tfds_source`)
returns a :class:`Dataset` of three splits, normalises with :func:`_normalise` and carves
validation (and, for mnist_5k, test) out of train with :func:`_carve`, so a seed means
the same thing whichever source is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from lagrangian_jax.errors import DataError

# Normalisation statistics of pixels scaled to [0, 1]. MNIST's live here because both
# the embedded digits and tfds:mnist use them.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class Split(NamedTuple):
  """One split: images (N, H, W, C) float32 (or a lazy source) and labels.

  ``images`` is either an ``np.ndarray`` or a random-access object with
  ``__len__`` and ``__getitem__(indices) -> float32 (k, H, W, C)``
  (see :class:`LazyImageSource`). Always read batches with :func:`get_batch`.
  """

  images: Any
  labels: Any  # np.ndarray int32 (N,), or LazyLabels for lazy sources.


class Dataset(NamedTuple):
  """A loaded data set: three splits plus what a model needs to know."""

  name: str
  train: Split
  validation: Split
  test: Split
  num_classes: int
  image_shape: tuple[int, int, int]


def _normalise(images_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """uint8-valued NHWC -> float32 ``(x / 255 - mean) / std`` per channel.

  >>> _normalise(np.full((1, 1, 1, 1), 255, np.uint8), (0.5,), (0.5,)).item()
  1.0
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  x = np.asarray(images_uint8, np.float32) / np.float32(255.0)
  return ((x - mean) / std).astype(np.float32, copy=False)


class PixelStats(NamedTuple):
  """Per-channel ``mean`` and ``std`` of pixels scaled to [0, 1]."""

  mean: tuple[float, ...]
  std: tuple[float, ...]


def normalise_on_device(images, stats: PixelStats | None):
  """The batch's images as the model reads them, inside the jitted step and evaluation.

  uint8 pixels (what lazy tfds sources and the grain pipeline send: a quarter of
  float32's bytes across host -> device) become float32 ``(x / 255 - mean) / std`` per
  channel, the arithmetic of :func:`_normalise`; float32 images are normalised already
  (in-memory data sets) and pass unchanged. The branch is on the dtype, at trace time.

  >>> import jax.numpy as jnp
  >>> normalise_on_device(jnp.full((1, 1, 1, 1), 255, jnp.uint8), PixelStats((0.5,), (0.5,)))
  Array([[[[1.]]]], dtype=float32)
  >>> normalise_on_device(jnp.zeros((1,), jnp.float32), None)
  Array([0.], dtype=float32)
  """
  import jax.numpy as jnp

  if images.dtype != jnp.uint8:
    return images
  if stats is None:
    raise DataError("uint8 images reached the step without their data set's mean and std")
  x = images.astype(jnp.float32) / jnp.float32(255.0)
  return (x - jnp.asarray(stats.mean, jnp.float32)) / jnp.asarray(stats.std, jnp.float32)


def pixel_stats(dataset: Dataset) -> PixelStats | None:
  """The statistics :func:`normalise_on_device` needs for ``dataset``: its lazy source's
  (uint8 on the wire), or None for in-memory images (already normalised).

  >>> pixel_stats(Dataset("x", *[Split(np.zeros((1, 1, 1, 1)), np.zeros(1))] * 3, 2, (1, 1, 1)))
  """
  preprocess = getattr(dataset.train.images, "preprocess", None)
  return None if preprocess is None else preprocess.stats


def _num_validation(num_examples: int, fraction: float, what: str) -> int:
  """Validation size for ``fraction`` of ``num_examples``; leaves >= 1 train row."""
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"{what}: validation_fraction must be in [0, 1), got {fraction!r}.")
  n_val = int(round(fraction * num_examples))
  if n_val >= num_examples:
    raise DataError(
      f"{what}: validation_fraction={fraction} of {num_examples} examples "
      "leaves no training data; use a smaller fraction."
    )
  return n_val


def _carve(
  num_examples: int,
  num_held_out: Sequence[int],
  seed: int,
  max_train_examples: int | None,
) -> tuple[np.ndarray, ...]:
  """Seeded split of ``range(num_examples)`` into held-out parts and train.

  Returns ``(*held_out, train)``, each sorted (sequential reads for lazy
  sources); the parts are disjoint and, without a cap, cover every index.
  ``max_train_examples`` keeps a random subset of train, so the held-out
  parts do not depend on the cap.

  >>> [p.tolist() for p in _carve(5, [2], seed=0, max_train_examples=None)]
  [[2, 4], [0, 1, 3]]
  """
  perm = np.random.default_rng(seed).permutation(num_examples)
  parts, start = [], 0
  for n in num_held_out:
    parts.append(np.sort(perm[start : start + n]))
    start += n
  train = perm[start:]
  if max_train_examples is not None:
    train = train[:max_train_examples]
  parts.append(np.sort(train))
  return tuple(parts)


def check_labels(
  labels: np.ndarray, num_classes: int, what: str, how: str = "", at: np.ndarray | None = None
) -> None:
  """Raises ``DataError`` naming ``what``, the first label outside ``[0, num_classes)`` and
  its index (``at[i]`` when the labels are rows ``at`` of a file): a stray label must not
  silently widen the classifier's head. ``how`` says where the class count came from.

  >>> check_labels(np.array([0, 9, 3]), 10, "train")
  >>> check_labels(np.array([0, 255]), 10, "t10k")
  Traceback (most recent call last):
  ...
  lagrangian_jax.errors.DataError: t10k: label 255 at index 1 is outside [0, 10) (10 classes).
  """
  labels = np.asarray(labels)
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    i = int(bad[0])
    raise DataError(
      f"{what}: label {int(labels[i])} at index {i if at is None else int(at[i])} is outside [0, {num_classes}) "
      f"({how or f'{num_classes} classes'})."
    )


def declared_classes(declared: int | None, actual: int, what: str) -> int:
  """``actual``, the source's class count, unless ``declared`` (``config.data.num_classes``)
  says otherwise: then a ``DataError``.

  >>> declared_classes(None, 10, "mnist_5k"), declared_classes(10, 10, "mnist_5k")
  (10, 10)
  """
  if declared is not None and declared != actual:
    raise DataError(
      f"{what}: config.data.num_classes={declared} but the data set has {actual} classes; "
      "set 0 (the data set's count) or the right number."
    )
  return actual


def _check_image_size(image_size: int | None, native: tuple[int, int, int], what: str) -> None:
  # Only ImageNet is resized; silently ignoring the argument elsewhere would
  # train a model on a shape the caller did not ask for.
  if image_size is not None and image_size != native[0]:
    raise DataError(
      f"{what}: image_size={image_size} is not supported (native size "
      f"{native[0]}x{native[1]}); leave image_size unset for this data set."
    )
