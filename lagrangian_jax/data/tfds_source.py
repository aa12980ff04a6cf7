"""Sources read through ``tfds.data_source``: tfds:mnist, tfds:cifar10, tfds:imagenet2012.

The data set must already be prepared as array_record (nothing here downloads), which
gives random access without TensorFlow. MNIST and CIFAR-10 are small and materialised
in memory (unless ``lazy=True``: the grain pipeline); ImageNet stays on disk behind
:class:`LazyImageSource`, which decodes, resizes and centre-crops only the rows a batch
asks for. :class:`Preprocess` is that per-image step, also run by grain's workers with
the training augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lagrangian_jax.data.base import MNIST_MEAN
from lagrangian_jax.data.base import MNIST_STD
from lagrangian_jax.data.base import Dataset
from lagrangian_jax.data.base import PixelStats
from lagrangian_jax.data.base import Split
from lagrangian_jax.data.base import _carve
from lagrangian_jax.data.base import _check_image_size
from lagrangian_jax.data.base import _normalise
from lagrangian_jax.data.base import _num_validation
from lagrangian_jax.data.base import check_labels
from lagrangian_jax.data.base import declared_classes
from lagrangian_jax.errors import DataError

# Normalisation statistics of pixels scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Standard ImageNet eval preprocessing: resize the short side to 256/224 of
# the crop, then centre-crop.
IMAGENET_DEFAULT_SIZE = 224
IMAGENET_RESIZE_RATIO = 256 / 224


class _TfdsSpec(NamedTuple):
  test_split: str
  validation_split: str | None  # None: carve from train with the seed.
  mean: tuple[float, ...]
  std: tuple[float, ...]
  lazy: bool


_TFDS_SPECS = {
  "mnist": _TfdsSpec("test", None, MNIST_MEAN, MNIST_STD, lazy=False),
  "cifar10": _TfdsSpec("test", None, CIFAR10_MEAN, CIFAR10_STD, lazy=False),
  # ImageNet's tfds "test" split has no labels (all -1), so its labelled
  # "validation" split serves as test and validation is carved from train.
  "imagenet2012": _TfdsSpec("validation", None, IMAGENET_MEAN, IMAGENET_STD, lazy=True),
}

# Records are read in chunks so materialising never holds all raw records twice.
_TFDS_READ_CHUNK = 4096


def _remote_backend_missing(data_dir: str | None) -> str | None:
  """What ``data_dir``'s URI scheme needs and lacks, or None (local, or readable).

  Without TensorFlow, tfds reaches ``gs://`` through etils' epath on fsspec, whose ``gs``
  protocol is gcsfs (``etils[epath-gcs]``, the ``gcs`` extra); with TensorFlow, its gfile.

  >>> _remote_backend_missing("/data/tfds") is None
  True
  """
  scheme = str(data_dir or "").partition("://")[0] if "://" in str(data_dir or "") else ""
  needs = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs"}.get(scheme)
  if needs is None:
    return None
  for module in (needs, "tensorflow"):
    try:
      __import__(module)
      return None
    except ImportError:
      pass
  return needs


def _open_tfds(name: str, split: str, data_dir: str | None):
  """``tfds.data_source`` that never downloads; failures become a one-line DataError
  that starts with the cause: a missing filesystem package, or the data set not
  prepared (with how to prepare it)."""
  where = data_dir or "the default tfds data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
  missing = _remote_backend_missing(data_dir)
  if missing:
    scheme = str(data_dir).partition("://")[0]
    raise DataError(
      f"config.data.data_dir={data_dir}: reading {scheme}:// needs {missing} (or TensorFlow); "
      + ('pip install -e ".[gcs]"' if missing == "gcsfs" else f"pip install {missing}")
    )
  try:
    import tensorflow_datasets as tfds
  except ImportError as err:
    raise DataError(
      f"config.data.name=tfds:{name} needs tensorflow-datasets: pip install tensorflow-datasets"
    ) from err
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as err:  # tfds raises many types here; all mean "not usable".
    # One line: tfds messages span several lines and list hundreds of names.
    reason = " ".join(str(err).split())[:300] or type(err).__name__
    manual = (
      " (ImageNet also needs the ILSVRC2012 tar files in the tfds manual_dir)"
      if name == "imagenet2012"
      else ""
    )
    raise DataError(
      f"config.data.name=tfds:{name} is not prepared in {where} (split {split!r} as "
      f"array_record): prepare it first with `tfds build {name} --file_format=array_record"
      + (f" --data_dir={data_dir}" if data_dir else "")
      + f"` or tfds.builder({name!r}, data_dir=..., file_format='array_record')"
      f".download_and_prepare(){manual}; tfds said: {reason}"
    ) from err


def _read_records(source, indices: Sequence[int]) -> list[dict]:
  # __getitems__ lets array_record batch and parallelise the reads.
  return list(source.__getitems__([int(i) for i in indices]))


def _materialise(source, indices: np.ndarray, spec: _TfdsSpec) -> tuple[np.ndarray, np.ndarray]:
  """Read ``indices`` of a tfds source into normalised images and labels."""
  images, labels = [], []
  for start in range(0, len(indices), _TFDS_READ_CHUNK):
    records = _read_records(source, indices[start : start + _TFDS_READ_CHUNK])
    images.append(_normalise(np.stack([r["image"] for r in records]), spec.mean, spec.std))
    labels.append(np.asarray([r["label"] for r in records], np.int32))
  if not images:  # e.g. validation_fraction=0: keep the NHWC rank.
    shape = np.shape(source[0]["image"]) if len(source) else (0, 0, 0)
    return np.zeros((0, *shape), np.float32), np.zeros((0,), np.int32)
  return np.concatenate(images), np.concatenate(labels)


AUGMENTATIONS = ("none", "crop_flip")


class Preprocess(NamedTuple):
  """How a record's image becomes a model input (picklable: grain workers run it).

  ``image_size=None`` keeps the native shape (MNIST, CIFAR-10). Otherwise the short
  side is resized to ``round(image_size * 256 / 224)`` and an ``image_size`` square is
  cut: the centre one, or with ``augment="crop_flip"`` (training) a uniformly random
  one, mirrored left-right with probability 1/2 (AlexNet's augmentation). Pixels are
  then normalised, ``(x / 255 - mean) / std`` per channel: on the host by ``__call__``, or
  on the device (``base.normalise_on_device``) for the uint8 :meth:`pixels`.

  >>> crop = Preprocess(4, (0.5,) * 3, (0.5,) * 3, augment="crop_flip")
  >>> crop(np.zeros((8, 6, 3), np.uint8), np.random.default_rng(0)).shape
  (4, 4, 3)
  """

  image_size: int | None
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augment: str = "none"

  def pixels(self, image, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 HWC (or HW) -> the uint8 HWC model input before normalisation (what crosses
    to the device; ``base.normalise_on_device`` finishes it); ``rng`` drives the
    augmentation."""
    image = np.asarray(image)
    if self.image_size is not None:
      return _resize_crop(image, self.image_size, self.augment, rng)
    return image[..., None] if image.ndim == 2 else image

  def __call__(self, image, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 HWC (or HW) -> normalised float32 HWC: :meth:`pixels`, then ``_normalise``."""
    return _normalise(self.pixels(image, rng)[None], self.mean, self.std)[0]

  @property
  def stats(self) -> PixelStats:
    return PixelStats(self.mean, self.std)


def _resize_crop(image: np.ndarray, size: int, augment: str, rng) -> np.ndarray:
  """uint8 HWC -> uint8 (size, size, 3): short side to size*256/224, then a crop."""
  from PIL import Image

  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:  # A few ImageNet JPEGs are greyscale.
    image = np.repeat(image, 3, axis=-1)
  h, w = image.shape[:2]
  short = max(size, int(round(size * IMAGENET_RESIZE_RATIO)))
  scale = short / min(h, w)
  new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  resized = np.asarray(
    Image.fromarray(image[..., :3].astype(np.uint8)).resize((new_w, new_h), Image.BILINEAR)
  )
  if augment == "crop_flip":
    top, left = int(rng.integers(new_h - size + 1)), int(rng.integers(new_w - size + 1))
    crop = resized[top : top + size, left : left + size]
    return crop[:, ::-1] if rng.random() < 0.5 else crop
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top : top + size, left : left + size]


class LazyImageSource:
  """Random-access images of a tfds split, decoded only when indexed.

  ``source[indices]`` reads the records ``row_ids[indices]`` and prepares each with
  ``preprocess`` (ImageNet: resize and centre-crop to ``image_size``; MNIST/CIFAR-10 read
  lazily for the grain pipeline: the native image); it returns float32 ``(k, *shape)``.
  :meth:`fetch` also returns the labels from the same read, which is what
  :func:`get_batch` uses. ``source``, ``row_ids`` and ``preprocess`` are what the grain
  pipeline's workers read.

  Example::

    images, labels = ds.train.images.fetch(np.arange(8))
  """

  def __init__(
    self,
    source,
    row_ids: np.ndarray,
    image_size: int | None,
    mean,
    std,
    native_shape: tuple[int, int, int] | None = None,
  ):
    self.source = source
    self.row_ids = np.asarray(row_ids, np.int64)
    self.preprocess = Preprocess(
      None if image_size is None else int(image_size), tuple(mean), tuple(std)
    )
    if image_size is None:
      self.image_shape = tuple(native_shape)
    else:
      self.image_shape = (int(image_size), int(image_size), 3)
    self.image_size = self.image_shape[0]

  def __len__(self) -> int:
    return len(self.row_ids)

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self), *self.image_shape)

  def fetch(self, indices, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (k,H,W,C) and labels int32 (k,) of ``indices``; ``raw=True``: the
    images as uint8 pixels (normalised on the device)."""
    rows = self.row_ids[np.asarray(indices, np.int64).reshape(-1)]
    dtype = np.uint8 if raw else np.float32
    if len(rows) == 0:
      return np.zeros((0, *self.image_shape), dtype), np.zeros((0,), np.int32)
    records = _read_records(self.source, rows)
    prepare = self.preprocess.pixels if raw else self.preprocess
    images = np.stack([prepare(r["image"]) for r in records])
    labels = np.asarray([r["label"] for r in records], np.int32)
    return images.astype(dtype, copy=False), labels

  def __getitem__(self, indices) -> np.ndarray:
    return self.fetch(indices)[0]


class LazyLabels:
  """Labels of a :class:`LazyImageSource`, read from the records on demand.

  Reading ImageNet's 1.28M labels up front would mean reading the whole data
  set, so labels stay lazy; ``len()`` and ``shape`` are free, indexing reads
  (and decodes) the records. Prefer :func:`get_batch`, which reads once.
  """

  dtype = np.dtype(np.int32)

  def __init__(self, images: LazyImageSource):
    self._images = images

  def __len__(self) -> int:
    return len(self._images)

  @property
  def shape(self) -> tuple[int]:
    return (len(self),)

  def __getitem__(self, indices) -> np.ndarray:
    return self._images.fetch(indices)[1]


def _load_tfds(
  name: str,
  data_dir: str | None,
  validation_fraction: float,
  seed: int,
  max_train_examples: int | None,
  image_size: int | None,
  lazy: bool = False,
  num_classes: int | None = None,
) -> Dataset:
  spec = _TFDS_SPECS[name]
  what = f"tfds:{name}"
  train_src = _open_tfds(name, "train", data_dir)
  test_src = _open_tfds(name, spec.test_split, data_dir)
  # Index arithmetic on the full train source instead of "train[:90%]"
  # split strings: it is seeded like the other loaders and works with
  # tfds.testing.mock_data, which ignores slicing.
  n_train = len(train_src)
  if spec.validation_split is None:
    n_val = _num_validation(n_train, validation_fraction, what)
    val_idx, train_idx = _carve(n_train, [n_val], seed, max_train_examples)
    val_src = train_src
  else:
    val_src = _open_tfds(name, spec.validation_split, data_dir)
    (train_idx,) = _carve(n_train, [], seed, max_train_examples)
    val_idx = np.arange(len(val_src))
  test_idx = np.arange(len(test_src))
  num_classes = declared_classes(num_classes, _tfds_num_classes(train_src, name), what)

  if spec.lazy:
    size = IMAGENET_DEFAULT_SIZE if image_size is None else int(image_size)
    if size < 1:
      raise DataError(f"{what}: image_size must be >= 1, got {image_size!r}.")
    native = None
  else:
    # Checked on one record before paying for reading the whole split.
    native = tuple(int(d) for d in np.shape(train_src[0]["image"]))
    _check_image_size(image_size, native, what)
    size = None

  if spec.lazy or lazy:

    def lazy_split(src, idx):
      images = LazyImageSource(src, idx, size, spec.mean, spec.std, native_shape=native)
      return Split(images, LazyLabels(images))

    return Dataset(
      what,
      lazy_split(train_src, train_idx),
      lazy_split(val_src, val_idx),
      lazy_split(test_src, test_idx),
      num_classes,
      native or (size, size, 3),
    )

  splits = {}
  for part, src, src_split, idx in (
    ("train", train_src, "train", train_idx),
    ("validation", val_src, spec.validation_split or "train", val_idx),
    ("test", test_src, spec.test_split, test_idx),
  ):
    splits[part] = Split(*_materialise(src, idx, spec))
    how = f"{num_classes} classes in its dataset_info"
    check_labels(splits[part].labels, num_classes, f"{what} split {src_split!r}", how, idx)
  return Dataset(
    name=what,
    **splits,
    num_classes=num_classes,
    image_shape=native,
  )


def _tfds_num_classes(source, name: str) -> int:
  try:
    return int(source.dataset_info.features["label"].num_classes)
  except Exception as err:  # Missing metadata: the data set is unusable here.
    raise DataError(
      f"tfds data set {name!r} has no 'label' ClassLabel feature in its "
      "metadata; only image classification data sets are supported."
    ) from err
