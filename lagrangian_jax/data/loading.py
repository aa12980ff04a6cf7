"""The entry point :func:`load_dataset`: checks the common arguments, dispatches by name.

The names and what each source reads are described in the package docstring
(:mod:`lagrangian_jax.data`); :data:`SUPPORTED_NAMES` lists them for error messages.
"""

from __future__ import annotations

import os

import numpy as np

from lagrangian_jax.data.base import Dataset
from lagrangian_jax.data.in_memory import FASHION_MNIST_DIR
from lagrangian_jax.data.in_memory import FASHION_MNIST_MEAN
from lagrangian_jax.data.in_memory import FASHION_MNIST_STD
from lagrangian_jax.data.in_memory import _load_idx
from lagrangian_jax.data.in_memory import _load_mnist_5k
from lagrangian_jax.data.tfds_source import _TFDS_SPECS
from lagrangian_jax.data.tfds_source import _load_tfds
from lagrangian_jax.errors import DataError

# A fraction of the official train split (of all 5,000 digits for mnist_5k).
DEFAULT_VALIDATION_FRACTION = 0.1

SUPPORTED_NAMES = (
  "mnist_5k",
  "fashion_mnist",
  "idx:<dir>",
  "tfds:mnist",
  "tfds:cifar10",
  "tfds:imagenet2012",
)


def _check_max_train(max_train_examples: int | None, what: str) -> None:
  if max_train_examples is not None and max_train_examples < 1:
    raise DataError(f"{what}: max_train_examples must be >= 1 or None, got {max_train_examples!r}.")


def load_dataset(
  name: str = "mnist_5k",
  *,
  data_dir: str | None = None,
  validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
  seed: int = 0,
  image_size: int | None = None,
  max_train_examples: int | None = None,
  lazy: bool = False,
  num_classes: int | None = None,
) -> Dataset:
  """Load a data set by name (see the package docstring for the sources).

  ``validation_fraction`` is a fraction of the official train split; for
  ``mnist_5k``, which has no official split, it is a fraction of all 5,000
  digits (test is ``MNIST_5K_TEST_FRACTION`` of them). ``seed`` fixes the
  carving; ``max_train_examples`` keeps a seeded random subset of train and
  leaves validation and test alone. ``image_size`` only applies to
  ImageNet (default 224). ``lazy=True`` keeps a tfds data set on disk (every split a
  :class:`LazyImageSource`, as ImageNet always is): what the grain pipeline reads.
  ``num_classes`` declares the class count (IDX: else the largest training label + 1;
  mnist_5k and tfds: it must be the data set's own); every label read is checked to lie
  in ``[0, num_classes)``.

  >>> ds = load_dataset("mnist_5k")
  >>> len(ds.train.labels), len(ds.validation.labels), len(ds.test.labels)
  (3500, 500, 1000)
  >>> load_dataset("idx:/data/mnist").image_shape           # doctest: +SKIP
  (28, 28, 1)
  """
  if not isinstance(name, str):
    raise DataError(
      f"data set name must be a string, got {name!r}; supported: {', '.join(SUPPORTED_NAMES)}."
    )
  if not isinstance(seed, (int, np.integer)) or seed < 0:
    raise DataError(f"{name}: seed must be a non-negative integer, got {seed!r}.")
  _check_max_train(max_train_examples, name)
  if num_classes is not None and num_classes < 1:
    raise DataError(f"{name}: num_classes must be >= 1 or None, got {num_classes!r}.")
  common = dict(
    num_classes=num_classes,
    validation_fraction=validation_fraction,
    seed=int(seed),
    max_train_examples=max_train_examples,
    image_size=image_size,
  )

  if lazy and not name.startswith("tfds:"):
    raise DataError(f"{name}: only tfds data sets (tfds:<name>) are read lazily from disk.")
  if name == "mnist_5k":
    return _load_mnist_5k(**common)
  if name == "fashion_mnist":
    directory = data_dir or FASHION_MNIST_DIR
    if not os.path.isdir(directory):
      raise DataError(
        f"Fashion-MNIST not found at {directory}: install Debian's "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
        "or pass config.data.data_dir."
      )
    return _load_idx(directory, name, stats=(FASHION_MNIST_MEAN, FASHION_MNIST_STD), **common)
  if name == "idx" or name.startswith("idx:"):
    directory = name[len("idx:") :] if name.startswith("idx:") else None
    if directory and data_dir and os.path.abspath(directory) != os.path.abspath(data_dir):
      raise DataError(
        f"{name}: the name points at {directory} but data_dir={data_dir}; give one of them."
      )
    directory = directory or data_dir
    if not directory:
      raise DataError("idx: give the directory as 'idx:<dir>' or pass data_dir=<dir>.")
    return _load_idx(directory, f"idx:{directory}", stats=None, **common)
  if name.startswith("tfds:") and name[len("tfds:") :] in _TFDS_SPECS:
    return _load_tfds(name[len("tfds:") :], data_dir, lazy=lazy, **common)
  raise DataError(f"unknown data set {name!r}; supported: {', '.join(SUPPORTED_NAMES)}.")
