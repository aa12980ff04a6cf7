"""A small ImageNet-layout tfds data set of generated JPEGs, for tests and benchmarks.

:func:`write_fake_imagenet` prepares ``<data_dir>/imagenet2012/5.1.0`` as array_record
files with the real ``imagenet2012`` features (JPEG ``image``, 1,000-class ``label``,
``file_name``), so ``tfds.data_source("imagenet2012", data_dir=...)`` and
``load_dataset("tfds:imagenet2012", data_dir=...)`` read it exactly like the real data
set, from any process (grain's workers included; ``tfds.testing.mock_data`` only patches
the calling process). Nothing is downloaded and TensorFlow is not needed: the images are
encoded with PIL and handed to tfds as JPEG bytes.

Example::

  write_fake_imagenet("/tmp/tfds", num_train=64, num_validation=16)
  ds = load_dataset("tfds:imagenet2012", data_dir="/tmp/tfds", image_size=32)
"""

from __future__ import annotations

import io
import os

import numpy as np


def _jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
  """A photo-like JPEG: smooth colour blobs plus grain (decodes like a real photo)."""
  from PIL import Image

  coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), np.uint8)
  image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.int16)
  image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def write_fake_imagenet(
  data_dir: str,
  *,
  num_train: int = 64,
  num_validation: int = 16,
  sizes: tuple[int, int] = (40, 80),
  num_labels: int = 1000,
  seed: int = 0,
) -> str:
  """Writes the data set under ``data_dir`` (once) and returns its directory.

  Image sides are drawn uniformly from ``sizes`` (inclusive); labels from the first
  ``num_labels`` of ImageNet's 1,000 classes. Rerunning with the same ``data_dir``
  reuses what is there, as tfds does.
  """
  import tensorflow_datasets as tfds

  real = tfds.builder_cls("imagenet2012")

  class FakeImagenet2012(real, skip_registration=True):
    name = "imagenet2012"  # so the registered builder reads the files

    def _split_generators(self, dl_manager):
      del dl_manager
      return {
        "train": self._generate_examples(num_train, seed),
        "validation": self._generate_examples(num_validation, seed + 1),
      }

    def _generate_examples(self, n, split_seed):
      rng = np.random.default_rng(split_seed)
      for i in range(n):
        h, w = (int(x) for x in rng.integers(sizes[0], sizes[1] + 1, 2))
        yield (
          f"{split_seed}_{i}",
          {
            "image": _jpeg(rng, h, w),
            "label": int(rng.integers(num_labels)),
            "file_name": f"fake_{split_seed}_{i}.JPEG",
          },
        )

  # A module path without dots: tfds then skips looking for the builder's code as a
  # package resource, which needs the optional importlib_resources package.
  FakeImagenet2012.__module__ = "fake_imagenet2012"
  tfds.disable_progress_bar()
  builder = FakeImagenet2012(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return os.path.join(data_dir, "imagenet2012", str(builder.version))
