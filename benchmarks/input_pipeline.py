"""Images per second of the input: grain training batches and evaluation batches.

Writes an ImageNet-layout tfds data set of generated, photo-like JPEGs (sides drawn
from ``--sides``, ImageNet's typical 300-500 pixels by default;
``lagrangian_jax.data.fake_tfds``), then reads, as training does (global arrays on the
mesh, blocked on until they are on the device):

* **train**: batches of ``lagrangian_jax.data.pipeline.GrainInput`` (decode, resize,
  random crop and flip) with ``--workers`` grain worker processes;
* **eval**: one pass of ``lagrangian_jax.data.feed.eval_batches`` over ``--eval_images``
  records (decode, resize, centre crop), with the same workers where the code feeds
  evaluation through grain (older code decodes serially in this process).

Each measurement is a fresh pipeline: one batch to warm up (workers start, caches fill),
then the rest timed. Rounds alternate between train and eval; medians are reported with
the bytes per image that cross to the device (float32: 4 per pixel, uint8: 1).

The script only uses names that exist before and after issue 22's input changes, so the
same file measures both: ``PYTHONPATH=<old checkout> python benchmarks/input_pipeline.py``.

Run:  python benchmarks/input_pipeline.py [--workers 2] [--batch 64] [--steps 8]
      [--rounds 3] [--size 224] [--eval_images 256] [--data_dir DIR]

Ends with ``RESULT train_images_per_second=... eval_images_per_second=...
bytes_per_image=...``.
"""

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time

if "PYTHONPATH" not in os.environ:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from lagrangian_jax import data as data_lib
from lagrangian_jax.data import fake_tfds
from lagrangian_jax.data import feed as feed_lib
from lagrangian_jax.data import pipeline


def _mesh():
  return jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def train_rate(train, args) -> tuple[float, int]:
  """(images/s, bytes per image) of ``args.steps`` grain training batches."""
  feed = pipeline.GrainInput(
    train,
    batch_size=args.batch,
    seeds=(0,),
    sharding=jax.NamedSharding(_mesh(), jax.P(None, "data")),
    workers=args.workers,
    prefetch=args.prefetch,
    augment="crop_flip",
    num_steps=args.steps + 1,
  )
  first = jax.block_until_ready(feed.next(0))  # workers start, the buffers fill
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    jax.block_until_ready(feed.next(step))
  seconds = time.perf_counter() - t0
  feed.iterator.close()
  return args.steps * args.batch / seconds, first[0][0, 0].nbytes


def eval_rate(split, args) -> float:
  """Images/s of one evaluation pass (the first batch untimed)."""
  kwargs = {}
  if "options" in inspect.signature(feed_lib.eval_batches).parameters:  # grain evaluation
    kwargs = dict(options=feed_lib.EvalOptions(args.workers, args.prefetch, args.min_rows))
  batches = feed_lib.eval_batches(split, args.batch, _mesh(), **kwargs)
  jax.block_until_ready(next(batches))
  t0, n = time.perf_counter(), 0
  for images, _, _ in batches:
    jax.block_until_ready(images)
    n += images.shape[0]
  seconds = time.perf_counter() - t0
  close = getattr(batches, "close", None)
  if close:
    close()
  return n / seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--steps", type=int, default=8)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--size", type=int, default=224, help="model input side")
  parser.add_argument("--sides", type=int, nargs=2, default=(300, 500))
  parser.add_argument("--images", type=int, default=512, help="training records written")
  parser.add_argument("--eval_images", type=int, default=256, help="validation records")
  parser.add_argument(
    "--min_rows", type=int, default=2000, help="evaluation: fewer rows per worker: threads"
  )
  parser.add_argument("--data_dir", default="", help="where to write (default: a temp dir)")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    t0 = time.perf_counter()
    fake_tfds.write_fake_imagenet(
      data_dir, num_train=args.images, num_validation=args.eval_images, sizes=tuple(args.sides)
    )
    print(f"wrote {args.images} + {args.eval_images} JPEGs in {time.perf_counter() - t0:.1f} s")
    ds = data_lib.load_dataset(
      "tfds:imagenet2012",
      data_dir=data_dir,
      image_size=args.size,
      validation_fraction=0.0,
      lazy=True,
    )
    rates = {"train": [], "eval": []}
    for r in range(args.rounds):
      rate, nbytes = train_rate(ds.train, args)
      rates["train"].append(rate)
      rates["eval"].append(eval_rate(ds.test, args))
      print(
        f"round {r}: train {rates['train'][-1]:.1f} images/s, "
        f"eval {rates['eval'][-1]:.1f} images/s",
        flush=True,
      )
  train, ev = (statistics.median(v) for v in rates.values())
  print(
    f"median: train {train:.1f} images/s, eval {ev:.1f} images/s, {nbytes} bytes/image to "
    f"the device; {args.workers} workers on {os.cpu_count()} CPUs, batch {args.batch}, "
    f"{args.size} px; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
  )
  print(
    f"RESULT train_images_per_second={train:.1f} eval_images_per_second={ev:.1f} "
    f"bytes_per_image={nbytes} load={os.getloadavg()[0]:.2f}"
  )


if __name__ == "__main__":
  main()
