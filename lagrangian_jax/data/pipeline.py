"""The grain input pipeline: tfds array_record records -> worker processes -> batches.

For data that does not fit in memory (ImageNet), ``config.data.pipeline = "grain"``:

* **Source**: the training split's ``tfds.data_source`` (array_record random access),
  through the :class:`~lagrangian_jax.data.LazyImageSource` that ``load_dataset(...,
  lazy=True)`` returns.
* **Schedule**: the same batches as the in-memory path, a pure function of ``(seed,
  step)`` (:func:`~lagrangian_jax.data.batch_indices`), one global batch of every seed
  per step. Element ``p`` of the grain data set is one example:

  .. math::
    p = t \\cdot S b + k \\cdot b + j \\;\\mapsto\\;
    \\text{batch\\_indices}(N, B, t, \\text{seed}_k)[c_j]

  for step ``t``, seed ``k`` of ``S``, and ``c_0 < ... < c_{b-1}``, the columns of the
  global batch ``B`` that this process's devices hold (``b = B / processes``). A
  process reads only its own columns: per-process sharding comes from the mesh, not
  from splitting the data set.
* **Workers**: decoding, resizing and augmentation (random crop and flip,
  :class:`~lagrangian_jax.data.tfds_source.Preprocess`) run in ``workers`` grain
  processes (``mp_prefetch``; 0: threads of the calling process), each preparing whole
  steps, ``prefetch`` of them ahead. The augmentation of an example draws from
  ``np.random.default_rng([seed, step, column])``: the same on any number of
  processes or workers.
* **Resuming**: the iterator's state is saved in every checkpoint (orbax
  ``PyGrainCheckpointSave``, one file per process) and restored with it, so a resumed
  run sees exactly the batches it would have seen. Every batch carries its step, and a
  batch from the wrong step is an error rather than silent training on other data.

Example::

  ds = load_dataset("tfds:imagenet2012", data_dir=..., lazy=True)
  feed = GrainInput(ds.train, batch_size=256, seeds=(0,), sharding=..., workers=8,
                    prefetch=2, augment="crop_flip", num_steps=50_000)
  batch = feed.next(0)                     # global arrays, (seeds, batch, ...)
  state = feed.iterator.get_state()        # what checkpoints hold
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lagrangian_jax.data.base import Split
from lagrangian_jax.data.batching import batch_indices
from lagrangian_jax.data.tfds_source import AUGMENTATIONS
from lagrangian_jax.data.tfds_source import LazyImageSource
from lagrangian_jax.errors import DataError

PIPELINES = ("memory", "grain")


class _Example:
  """Element ``p`` of the schedule -> ``{image, label, index, step}`` (runs in workers)."""

  def __init__(self, images: LazyImageSource, batch_size, seeds, columns, augment: str):
    self.source, self.row_ids = images.source, images.row_ids
    self.preprocess = images.preprocess._replace(augment=augment)
    self.batch_size, self.seeds = int(batch_size), tuple(int(s) for s in seeds)
    self.columns = np.asarray(columns, np.int64)
    self.per_step = len(self.seeds) * len(self.columns)

  def __call__(self, position) -> dict:
    step, e = divmod(int(position), self.per_step)
    k, j = divmod(e, len(self.columns))
    seed, column = self.seeds[k], int(self.columns[j])
    index = int(batch_indices(len(self.row_ids), self.batch_size, step, seed)[column])
    record = self.source[int(self.row_ids[index])]
    rng = np.random.default_rng([seed, step, column])
    return {
      "image": self.preprocess(record["image"], rng),
      "label": np.int32(record["label"]),
      "index": np.int32(index),
      "step": np.int32(step),
    }


def process_columns(sharding, num_seeds: int, batch_size: int) -> list[tuple[int, int]]:
  """The ``[start, stop)`` column ranges of a ``(seeds, batch)`` array this process holds."""
  index_map = sharding.addressable_devices_indices_map((num_seeds, batch_size))
  return sorted({idx[1].indices(batch_size)[:2] for idx in index_map.values()})


class GrainInput:
  """Training batches of a lazy tfds split through grain (see the module docstring).

  ``sharding`` is the batch's ``NamedSharding`` (``P(None, "data")`` over the mesh);
  ``next(step)`` returns the global ``(images, labels, indices)`` arrays of that step.
  ``iterator`` is the grain iterator whose state checkpoints hold.
  """

  def __init__(
    self,
    split: Split,
    *,
    batch_size: int,
    seeds: Sequence[int],
    sharding,
    workers: int,
    prefetch: int,
    augment: str,
    num_steps: int,
  ):
    from absl import flags
    import grain.python as grain

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app
      flags.FLAGS.mark_as_parsed()  # (tests, notebooks) their defaults are what we want
    if not isinstance(split.images, LazyImageSource):
      raise DataError(
        "the grain pipeline reads tfds data sets from disk (load_dataset(..., lazy=True))"
      )
    if augment not in AUGMENTATIONS:
      raise DataError(f"augment must be one of {list(AUGMENTATIONS)}, got {augment!r}.")
    self.seeds, self.batch_size, self.sharding = tuple(seeds), int(batch_size), sharding
    self.image_shape = tuple(split.images.image_shape)
    self._ranges = process_columns(sharding, len(self.seeds), self.batch_size)
    columns = np.concatenate([np.arange(a, b) for a, b in self._ranges])
    self._offsets, offset = {}, 0
    for a, b in self._ranges:
      self._offsets[(a, b)] = offset
      offset += b - a
    self._local = offset
    example = _Example(split.images, batch_size, self.seeds, columns, augment)
    per_step = example.per_step
    ds = (
      grain.MapDataset.range(max(int(num_steps), 1) * per_step)
      .map(example)
      .batch(per_step, drop_remainder=True)
      .to_iter_dataset(grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch))
    )
    if workers > 0:
      ds = ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch)
      )
    self.iterator = iter(ds)

  def next(self, step: int):
    """``(images, labels, indices)`` of ``step``, global arrays ``(seeds, batch, ...)``."""
    import jax

    try:
      local = next(self.iterator)
    except StopIteration:
      raise DataError(f"the grain pipeline ran out of steps at step {step}") from None
    got = int(local["step"][0])
    if got != step:
      raise DataError(
        f"the grain pipeline is at step {got} but training is at step {step}: its state "
        "does not belong to this checkpoint"
      )
    shape = (len(self.seeds), self.batch_size)
    # copies: grain hands workers' batches over in shared memory, which is released
    # (unlinked) as soon as nothing refers to it
    blocks = {
      k: np.array(local[k]).reshape((len(self.seeds), self._local) + local[k].shape[1:])
      for k in ("image", "label", "index")
    }
    del local

    def array(key, tail):
      def rows(index):
        a, b = index[1].indices(self.batch_size)[:2]
        off = self._offsets[(a, b)]
        return blocks[key][index[0], off : off + (b - a)]

      return jax.make_array_from_callback(shape + tail, self.sharding, rows)

    return array("image", self.image_shape), array("label", ()), array("index", ())
