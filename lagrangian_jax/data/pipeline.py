"""The grain input pipeline: tfds array_record records -> parallel decoding -> batches.

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
* **Workers**: each example is decoded, resized and augmented (random crop and flip,
  :class:`~lagrangian_jax.data.tfds_source.Preprocess`) on its own, in parallel:
  ``threads`` per process (``to_iter_dataset(grain.ReadOptions(num_threads=...))``) in
  ``workers`` grain processes (``mp_prefetch``; 0: the threads of the calling process),
  ``prefetch`` steps ahead (:func:`host_workers` sizes ``workers=-1`` to the host). Grain
  hands each worker every ``workers``-th element and reads them back round-robin, so the
  elements arrive in order (checked: each carries its position). The images stay uint8
  (``Preprocess.pixels``): they cross to the device at a quarter of float32's bytes and
  ``normalise_on_device`` finishes them in the jitted step. The augmentation of an example
  draws from ``np.random.default_rng([seed, step, column])``: the same on any number of
  processes, workers or threads.
* **Evaluation** (:class:`GrainEval`): the same machinery over a split's rows in order,
  each process reading only its rows of every batch (``feed.eval_batches``).
* **Resuming**: the iterator's state is saved in every checkpoint (orbax
  ``grain.checkpoint.CheckpointSave``, one file per process) and restored with it, so a
  resumed run sees exactly the batches it would have seen. Every element carries its
  position, and one from another step is an error rather than silent training on other
  data.

Example::

  ds = load_dataset("tfds:imagenet2012", data_dir=..., lazy=True)
  feed = GrainInput(ds.train, batch_size=256, seeds=(0,), sharding=..., workers=8,
                    prefetch=2, augment="crop_flip", num_steps=50_000)
  batch = feed.next(0)                     # global arrays, (seeds, batch, ...), uint8 images
  state = feed.iterator.get_state()        # what checkpoints hold
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import os

import numpy as np

from lagrangian_jax.data.base import Split
from lagrangian_jax.data.batching import batch_indices
from lagrangian_jax.data.tfds_source import AUGMENTATIONS
from lagrangian_jax.data.tfds_source import LazyImageSource
from lagrangian_jax.errors import DataError

PIPELINES = ("memory", "grain")


# Beyond this many worker processes per training process, more threads per worker instead:
# each process holds its own copy of the pipeline and buffers.
MAX_AUTO_WORKERS = 16


def host_workers(workers: int) -> tuple[int, int]:
  """``(worker processes, decoding threads per process)`` for ``config.data.workers``.

  ``-1``: sized to the CPUs ``c`` this process may use (``os.sched_getaffinity``: a SLURM
  ``--cpus-per-task`` or container binding counts; with several training processes on
  an unbound host, set ``workers`` to its CPUs / processes): ``w = min(c - 1,``
  :data:`MAX_AUTO_WORKERS` ``)`` processes (one CPU stays with training) of
  ``max(2, (c - 1) // w)`` threads; with one CPU, no worker processes. ``0``: no worker
  processes, one decoding thread per CPU in the training process. ``n > 0``: ``n``
  processes of two threads (one decodes while another reads).

  >>> host_workers(3)
  (3, 2)
  """
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  cpus = max(int(cpus or 1), 1)
  if workers < 0:
    workers = min(cpus - 1, MAX_AUTO_WORKERS)
    return (workers, max(2, (cpus - 1) // workers)) if workers > 0 else (0, cpus)
  return (int(workers), 2) if workers > 0 else (0, cpus)


def _stream(ds, workers: int, prefetch: int, per_step: int):
  """Elements of the map data set ``ds`` in order, decoded in parallel (see the module
  docstring); ``prefetch`` steps of ``per_step`` elements ahead."""
  import grain

  processes, threads = host_workers(workers)
  ahead = max(int(prefetch), 1) * max(per_step, 1)
  it = ds.to_iter_dataset(
    grain.ReadOptions(num_threads=threads, prefetch_buffer_size=-(-ahead // max(processes, 1)))
  )
  if processes > 0:
    it = it.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=processes, per_worker_buffer_size=-(-ahead // processes)
      )
    )
  return iter(it)


def _mark_parsed() -> None:
  from absl import flags

  if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app
    flags.FLAGS.mark_as_parsed()  # (tests, notebooks) their defaults are what we want


def _take(iterator, first: int, count: int, what: str) -> dict:
  """The next ``count`` elements, stacked; they must be positions ``first, first+1, ...``."""
  items = []
  for _ in range(count):
    try:
      items.append(next(iterator))
    except StopIteration:
      raise DataError(f"the grain pipeline ran out at {what}") from None
  got = np.asarray([int(e["position"]) for e in items], np.int64)
  if not np.array_equal(got, np.arange(first, first + count)):
    raise DataError(
      f"the grain pipeline gave elements {got[:4].tolist()}... at {what}, expected "
      f"{first}...: its state does not belong to this checkpoint"
    )
  # np.stack copies: grain hands workers' elements over in shared memory, released as
  # soon as nothing refers to it
  return {k: np.stack([e[k] for e in items]) for k in items[0] if k != "position"}


def _global(block, ranges, sharding, shape, axis: int):
  """The global array of ``shape`` whose rows (along ``axis``) in ``ranges`` this process
  holds, concatenated in ``block``."""
  import jax

  offsets, offset = {}, 0
  for a, b in ranges:
    offsets[(a, b)] = offset
    offset += b - a

  def rows(index):
    a, b = index[axis].indices(shape[axis])[:2]
    lead = tuple(index[:axis])
    return block[lead + (slice(offsets[(a, b)], offsets[(a, b)] + b - a),)]

  return jax.make_array_from_callback(shape, sharding, rows)


class _Example:
  """Element ``p`` of the schedule -> ``{image, label, index, position}`` (in workers)."""

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
      "image": self.preprocess.pixels(record["image"], rng),
      "label": np.int32(record["label"]),
      "index": np.int32(index),
      "position": np.int64(position),
    }


def process_columns(sharding, num_seeds: int, batch_size: int) -> list[tuple[int, int]]:
  """The ``[start, stop)`` column ranges of a ``(seeds, batch)`` array this process holds."""
  index_map = sharding.addressable_devices_indices_map((num_seeds, batch_size))
  return sorted({idx[1].indices(batch_size)[:2] for idx in index_map.values()})


class GrainInput:
  """Training batches of a lazy tfds split through grain (see the module docstring).

  ``sharding`` is the batch's ``NamedSharding`` (``P(None, "data")`` over the mesh);
  ``next(step)`` returns the global ``(images, labels, indices)`` arrays of that step,
  images uint8. ``iterator`` is the grain iterator whose state checkpoints hold.
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
    import grain

    _mark_parsed()
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
    example = _Example(split.images, batch_size, self.seeds, columns, augment)
    self._per_step = example.per_step
    ds = grain.MapDataset.range(max(int(num_steps), 1) * self._per_step).map(example)
    self.iterator = _stream(ds, workers, prefetch, self._per_step)

  def next(self, step: int):
    """``(images, labels, indices)`` of ``step``, global arrays ``(seeds, batch, ...)``."""
    local = _take(self.iterator, step * self._per_step, self._per_step, f"step {step}")
    shape, n = (len(self.seeds), self.batch_size), len(self.seeds)
    return tuple(
      _global(
        local[k].reshape((n, -1) + local[k].shape[1:]),
        self._ranges,
        self.sharding,
        shape + tail,
        axis=1,
      )
      for k, tail in (("image", self.image_shape), ("label", ()), ("index", ()))
    )


class _EvalExample:
  """Row ``position`` of a process's evaluation order -> ``{image, label, position}``."""

  def __init__(self, images: LazyImageSource, rows: np.ndarray):
    self.source, self.row_ids = images.source, images.row_ids
    self.preprocess, self.rows = images.preprocess, np.asarray(rows, np.int64)

  def __call__(self, position) -> dict:
    record = self.source[int(self.row_ids[self.rows[int(position)]])]
    return {
      "image": self.preprocess.pixels(record["image"]),
      "label": np.int32(record["label"]),
      "position": np.int64(position),
    }


class GrainEval:
  """Evaluation batches of a lazy split through grain: the first ``n`` rows in batches of
  ``size`` (the last ``n % size`` rows in one batch every process holds whole), each
  process decoding only its rows, in parallel and ahead (see the module docstring).

  ``batches()`` yields ``(images uint8, labels, indices)`` global arrays: full batches
  sharded ``by_rows``, the last one ``replicated``.
  """

  def __init__(self, split: Split, n: int, size: int, by_rows, replicated, workers, prefetch):
    import grain

    _mark_parsed()
    self.n, self.size, self.by_rows, self.replicated = int(n), int(size), by_rows, replicated
    self.image_shape = tuple(split.images.image_shape)
    index_map = by_rows.addressable_devices_indices_map((self.size,))
    self._ranges = sorted({idx[0].indices(self.size)[:2] for idx in index_map.values()})
    own = np.concatenate([np.arange(a, b) for a, b in self._ranges])
    full = self.n // self.size
    rows = [start + own for start in range(0, full * self.size, self.size)]
    rows.append(np.arange(full * self.size, self.n))  # the rest: every process reads all
    self._counts = [len(own)] * full + ([self.n - full * self.size] if self.n % self.size else [])
    rows = np.concatenate(rows).astype(np.int64)
    ds = grain.MapDataset.range(len(rows)).map(_EvalExample(split.images, rows))
    self._iterator = _stream(ds, workers, prefetch, len(own))

  def batches(self) -> Iterator[tuple]:
    import jax

    full, first = self.n // self.size, 0
    try:
      for b, count in enumerate(self._counts):
        local = _take(self._iterator, first, count, f"evaluation batch {b}")
        first += count
        ranges, sharding = (
          (self._ranges, self.by_rows) if b < full else ([(0, count)], self.replicated)
        )
        rows = self.size if b < full else count
        idx = np.arange(b * self.size, b * self.size + rows, dtype=np.int32)
        yield (
          _global(local["image"], ranges, sharding, (rows, *self.image_shape), axis=0),
          _global(local["label"], ranges, sharding, (rows,), axis=0),
          jax.make_array_from_callback((rows,), sharding, lambda index, i=idx: i[index]),
        )
    finally:
      self.close()

  def close(self) -> None:
    close = getattr(self._iterator, "close", None)
    if close:
      close()
