"""Writes scikit-learn's 1,797 handwritten digits as an MNIST-layout IDX directory.

A second real digit data set that works offline (UCI optical recognition of handwritten
digits, 8x8 images with 17 grey levels, shipped inside scikit-learn), to check on data
never used for tuning that the chosen defaults keep their ordering. Each image is
upsampled to 20x20 and centred in a 28x28 frame, as MNIST's digits are; 1,438 train and
359 test images (a seeded split).

Run, then train on it with any config:
  python -m experiments.export_digits --out=/tmp/uci_digits
  python -m experiments.table1 --dataset=idx:/tmp/uci_digits --seeds=3 --steps=700 \\
    --workdir=runs/table1_uci
"""

from __future__ import annotations

import os
import struct

from absl import app
from absl import flags
import numpy as np
from PIL import Image

FLAGS = flags.FLAGS


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file (the layout ``data.read_idx`` reads)."""
  array = np.ascontiguousarray(array, np.uint8)
  with open(path, "wb") as f:
    f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
    f.write(array.tobytes())


def mnist_like(images: np.ndarray) -> np.ndarray:
  """(N, 8, 8) grey levels 0..16 -> (N, 28, 28) uint8: a 20x20 digit in a 4-pixel border."""
  out = np.zeros((len(images), 28, 28), np.uint8)
  for i, image in enumerate(images):
    small = Image.fromarray(np.uint8(np.round(image * 255.0 / 16.0)))
    out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
  return out


def export(out: str, seed: int = 0, test_fraction: float = 0.2) -> dict:
  from sklearn.datasets import load_digits  # noqa: PLC0415 (only this tool needs sklearn)

  digits = load_digits()
  images, labels = mnist_like(digits.images), digits.target.astype(np.uint8)
  order = np.random.default_rng(seed).permutation(len(labels))
  n_test = int(round(test_fraction * len(labels)))
  test, train = order[:n_test], order[n_test:]
  os.makedirs(out, exist_ok=True)
  for part, idx in (("train", train), ("t10k", test)):
    write_idx(os.path.join(out, f"{part}-images-idx3-ubyte"), images[idx])
    write_idx(os.path.join(out, f"{part}-labels-idx1-ubyte"), labels[idx])
  return {"train": len(train), "test": len(test)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if not FLAGS.out:
    raise app.UsageError("--out is required")
  sizes = export(FLAGS.out, FLAGS.seed, FLAGS.test_fraction)
  print(f"EXPORTED dir={FLAGS.out} train={sizes['train']} test={sizes['test']}")


def define_flags():
  """The command-line flags (defined only when run as a program, so that importing
  this module next to another program's flags does not clash)."""
  flags.DEFINE_string("out", None, "Directory to write the four IDX files to.")
  flags.DEFINE_integer("seed", 0, "Seed of the train/test split.")
  flags.DEFINE_float("test_fraction", 0.2, "Fraction of the digits kept for testing.")


if __name__ == "__main__":
  define_flags()
  app.run(main)
