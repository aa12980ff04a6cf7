"""Images per second of the grain input pipeline over tfds array_record JPEGs.

Writes an ImageNet-layout tfds data set of generated, photo-like JPEGs (sides drawn
from ``--sides``, ImageNet's typical 300-500 pixels by default;
``lagrangian_jax.data.fake_tfds``), then reads training batches through
``lagrangian_jax.data.pipeline.GrainInput`` exactly as training does (decode, resize,
random crop and flip, normalise, global arrays on the mesh) with 0 workers (threads of
this process) and with ``--workers`` grain worker processes. Each measurement is a fresh
pipeline: one batch to warm up (workers start, caches fill), then ``--steps`` batches
timed. Rounds alternate between the two settings; the medians are reported.

Run:  python benchmarks/input_pipeline.py [--workers 8] [--batch 64] [--steps 8]
      [--rounds 3] [--size 224] [--data_dir DIR]

Ends with ``RESULT images_per_second_0_workers=... images_per_second_N_workers=...
ratio=...``.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from lagrangian_jax import data as data_lib
from lagrangian_jax.data import fake_tfds
from lagrangian_jax.data import pipeline


def images_per_second(train, args, workers: int) -> float:
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  feed = pipeline.GrainInput(
    train,
    batch_size=args.batch,
    seeds=(0,),
    sharding=jax.NamedSharding(mesh, jax.P(None, "data")),
    workers=workers,
    prefetch=args.prefetch,
    augment="crop_flip",
    num_steps=args.steps + 1,
  )
  jax.block_until_ready(feed.next(0))  # workers start, the first batches fill the buffers
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    jax.block_until_ready(feed.next(step))
  seconds = time.perf_counter() - t0
  feed.iterator.close()
  return args.steps * args.batch / seconds


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
  parser.add_argument("--data_dir", default="", help="where to write (default: a temp dir)")
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir or tmp
    t0 = time.perf_counter()
    fake_tfds.write_fake_imagenet(
      data_dir, num_train=args.images, num_validation=8, sizes=tuple(args.sides)
    )
    print(
      f"wrote {args.images} JPEGs ({args.sides[0]}-{args.sides[1]} px) to {data_dir} "
      f"in {time.perf_counter() - t0:.1f} s"
    )
    ds = data_lib.load_dataset(
      "tfds:imagenet2012", data_dir=data_dir, image_size=args.size, validation_fraction=0.0
    )
    rates = {0: [], args.workers: []}
    for r in range(args.rounds):
      for workers in rates:
        rates[workers].append(images_per_second(ds.train, args, workers))
        print(f"round {r}: {workers} workers {rates[workers][-1]:.1f} images/s", flush=True)
  zero, many = statistics.median(rates[0]), statistics.median(rates[args.workers])
  print(
    f"median: 0 workers {zero:.1f} images/s, {args.workers} workers {many:.1f} images/s "
    f"({many / zero:.2f}x) on {os.cpu_count()} CPUs, batch {args.batch}, {args.size} px"
  )
  print(
    f"RESULT images_per_second_0_workers={zero:.1f} "
    f"images_per_second_{args.workers}_workers={many:.1f} ratio={many / zero:.2f}"
  )


if __name__ == "__main__":
  main()
