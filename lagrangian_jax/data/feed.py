"""Host data to global arrays on the mesh: training batches and evaluation batches.

Every array built here is global: each process reads only the rows of its own devices
(:class:`RowReader`), so no process ever reads another's examples. Training batches are a
pure function of ``(seed, step)`` (:func:`make_batch`) or come from the grain pipeline
(:class:`InputFeed`); evaluation walks a split in order (:func:`eval_batches`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import jax
import numpy as np

from lagrangian_jax import data as data_lib  # its get_batch: the one reader of a split's rows
from lagrangian_jax import sharding
from lagrangian_jax.data import base as data_base
from lagrangian_jax.data import pipeline as pipeline_lib
from lagrangian_jax.methods import base

if TYPE_CHECKING:
  from lagrangian_jax.state import Experiment


class RowReader:
  """Global ``(images, labels, indices)`` arrays of the examples ``idx`` of a split.

  ``idx`` has the batch axis at ``batch_axis``; each device's callback reads only the
  columns of that axis it holds (once per column range, shared by images and labels),
  so a process never reads another process's rows.

  >>> split = data_base.Split(np.zeros((4, 2, 2, 1), np.float32), np.arange(4, dtype=np.int32))
  >>> rep = jax.NamedSharding(jax.make_mesh((1,), ("data",)), jax.P())
  >>> [x.shape for x in RowReader(split, np.arange(3)).arrays(rep, batch_axis=0)]
  [(3, 2, 2, 1), (3,), (3,)]
  """

  def __init__(self, split: data_base.Split, idx: np.ndarray, image_shape=None):
    self.split, self.idx = split, np.asarray(idx)
    self.image_shape = tuple(image_shape or np.shape(split.images)[1:])
    self._read = {}

  def _rows(self, index, batch_axis):
    key = index[batch_axis].indices(self.idx.shape[batch_axis])
    if key not in self._read:
      part = self.idx[(slice(None),) * batch_axis + (slice(*key),)]
      # raw: a lazy split's uint8 pixels, normalised on the device (data.normalise_on_device)
      images, labels = data_lib.get_batch(self.split, part.reshape(-1), raw=True)
      self._read[key] = (
        images.reshape(part.shape + images.shape[1:]),
        labels.reshape(part.shape),
      )
    return self._read[key]

  def arrays(self, sharding, batch_axis: int) -> tuple[jax.Array, ...]:
    shape = self.idx.shape
    # index[:batch_axis] selects along the axes before the rows (the seed axis: whole)
    images = jax.make_array_from_callback(
      shape + self.image_shape,
      sharding,
      lambda index: self._rows(index, batch_axis)[0][index[:batch_axis]],
    )
    labels = jax.make_array_from_callback(
      shape, sharding, lambda index: self._rows(index, batch_axis)[1][index[:batch_axis]]
    )
    indices = jax.make_array_from_callback(
      shape, sharding, lambda index: self.idx.astype(np.int32)[index]
    )
    return images, labels, indices


def _steps(step: int, exp: Experiment) -> jax.Array:
  steps = np.full((len(exp.seeds),), step, np.int32)
  return sharding.global_from_host(steps, exp.batch_shardings.step)


def make_batch(exp: Experiment, step: int) -> base.Batch:
  """Step ``step``'s batch of every seed, stacked: a pure function of (seed, step).

  Global arrays ``(seeds, batch, ...)`` sharded ``P(None, "data")``: each process reads
  only the examples of its own devices' columns.
  """
  n = len(exp.dataset.train.labels)
  idx = np.stack([data_lib.batch_indices(n, exp.config.batch_size, step, s) for s in exp.seeds])
  images, labels, indices = RowReader(exp.dataset.train, idx, exp.dataset.image_shape).arrays(
    exp.batch_shardings.images, batch_axis=1
  )
  return base.Batch(images, labels, indices, _steps(step, exp))


def batches_of(
  split: data_base.Split, batch_size: int, limit: int | None = None
) -> Iterator[tuple[np.ndarray, ...]]:
  """``(images, labels, indices)`` of consecutive batches of the first ``limit`` examples.

  Host arrays, read whole by the calling process: a method's initialisation pass
  (``map_train``), which every process computes alike; evaluation uses
  :func:`eval_batches`.

  >>> split = data_base.Split(np.zeros((5, 1), np.float32), np.arange(5, dtype=np.int32))
  >>> [len(i) for _, _, i in batches_of(split, 2)]
  [2, 2, 1]
  """
  n = len(split.labels) if limit is None else min(limit, len(split.labels))
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    yield (*data_lib.get_batch(split, idx), idx)


def eval_batch_size(batch_size: int, mesh) -> int:
  """``batch_size`` rounded up to a multiple of the mesh's devices.

  >>> eval_batch_size(250, jax.make_mesh((1,), ("data",)))
  250
  """
  n_dev = mesh.shape["data"]
  return -(-batch_size // n_dev) * n_dev


class EvalOptions(NamedTuple):
  """The grain workers and prefetch that decode a lazy split for evaluation
  (``config.data.workers``, ``config.data.prefetch``; see ``pipeline.host_workers``).

  Worker processes start afresh for every pass (seconds each: a process imports the
  package), so a pass of fewer than ``min_rows_per_worker`` rows per worker decodes in
  grain's threads of the training process instead (``workers=0``).
  """

  workers: int = -1
  prefetch: int = 2
  min_rows_per_worker: int = 2000

  @classmethod
  def from_config(cls, config) -> EvalOptions:
    return cls(int(config.data.workers), int(config.data.prefetch))

  def for_rows(self, rows: int) -> int:
    """The ``workers`` a pass of ``rows`` rows (this process's) uses.

    >>> EvalOptions(4).for_rows(100), EvalOptions(4).for_rows(10_000)
    (0, 4)
    """
    processes, _ = pipeline_lib.host_workers(self.workers)
    return self.workers if rows >= self.min_rows_per_worker * max(processes, 1) else 0


def eval_batches(
  split: data_base.Split,
  batch_size: int,
  mesh,
  limit: int | None = None,
  *,
  options: EvalOptions | None = None,
) -> Iterator[tuple[jax.Array, ...]]:
  """``(images, labels, indices)`` of the first ``limit`` examples, as global arrays.

  Full batches of :func:`eval_batch_size` rows are sharded over ``data``: every process
  reads only its devices' rows. The ``r < batch`` rows left over form one last batch
  that every device holds whole (replicated) rather than a zero-padded, masked one: a
  method's ``defects`` are means over the batch it is given, so padding rows would bias
  them, while the count-weighted sum of batch means does not depend on how the rows are
  batched. With one device the batches are exactly those of :func:`batches_of`.

  A lazy (tfds) split is decoded by grain (``pipeline.GrainEval``: ``options``' workers,
  in parallel and ahead of the device; threads for a short pass, :class:`EvalOptions`),
  its images uint8, normalised on the device by the evaluators; in-memory splits are
  sliced here.
  """
  n = len(split.labels) if limit is None else min(limit, len(split.labels))
  size = eval_batch_size(batch_size, mesh)
  by_rows = jax.NamedSharding(mesh, jax.P("data"))
  rep = jax.NamedSharding(mesh, jax.P())
  if isinstance(split.images, data_lib.LazyImageSource):
    options = options or EvalOptions()
    workers = options.for_rows(n // max(jax.process_count(), 1))
    yield from pipeline_lib.GrainEval(
      split, n, size, by_rows, rep, workers, options.prefetch
    ).batches()
    return
  for start in range(0, n, size):
    stop = min(start + size, n)
    reader = RowReader(split, np.arange(start, stop))
    yield reader.arrays(by_rows if stop - start == size else rep, batch_axis=0)


class InputFeed:
  """The loop's training batches.

  ``config.data.pipeline = "memory"``: :func:`make_batch`, a pure function of ``(seed,
  step)``; a checkpoint holds the train state alone. ``"grain"``:
  :class:`~lagrangian_jax.data.pipeline.GrainInput` (workers, prefetch), whose iterator
  state (``grain``) ``checkpoints`` saves and restores beside the train state.
  """

  def __init__(self, exp: Experiment):
    self.exp, self.grain = exp, None
    data = exp.config.data
    if data.pipeline == "grain":
      self.grain = pipeline_lib.GrainInput(
        exp.dataset.train,
        batch_size=exp.config.batch_size,
        seeds=exp.seeds,
        sharding=exp.batch_shardings.images,
        workers=data.workers,
        prefetch=data.prefetch,
        augment=data.augment,
        num_steps=exp.config.num_steps,
      )

  def batch(self, step: int) -> base.Batch:
    if self.grain is None:
      return make_batch(self.exp, step)
    images, labels, indices = self.grain.next(step)
    return base.Batch(images, labels, indices, _steps(step, self.exp))

  def close(self) -> None:
    """Stops the grain workers (and frees the batches they prefetched)."""
    if self.grain is not None:
      self.grain.iterator.close()
