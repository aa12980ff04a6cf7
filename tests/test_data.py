"""Tests for lagrangian_jax.data: sources, error messages, batching, eval padding.

Nothing here needs network access or Debian's dataset-fashion-mnist: IDX
files are written into tmp_path, TFDS data come from tfds.testing.mock_data
or from a tiny "mnist" prepared locally as array_record (no TensorFlow).
"""

import gzip
import struct
import sys
import types

import numpy as np
import pytest

from lagrangian_jax import data as D
from lagrangian_jax.data import tfds_source

# ---------------------------------------------------------------- mnist_5k


@pytest.fixture(scope="module")
def mnist5k():
  return D.load_dataset("mnist_5k", seed=0)


def test_mnist_5k_shapes_and_dtypes(mnist5k):
  assert mnist5k.name == "mnist_5k"
  assert mnist5k.num_classes == 10 and mnist5k.image_shape == (28, 28, 1)
  sizes = {}
  for name in ("train", "validation", "test"):
    split = getattr(mnist5k, name)
    assert split.images.dtype == np.float32 and split.labels.dtype == np.int32
    assert split.images.shape == (len(split.labels), 28, 28, 1)
    assert set(np.unique(split.labels)) == set(range(10)), name
    sizes[name] = len(split.labels)
  assert sizes == {"train": 3500, "validation": 500, "test": 1000}
  # Roughly zero mean / unit variance after MNIST normalisation.
  assert abs(float(mnist5k.train.images.mean())) < 0.1
  assert 0.9 < float(mnist5k.train.images.std()) < 1.1


def test_mnist_5k_splits_disjoint(mnist5k):
  parts = D._carve(5000, [1000, 500], seed=0, max_train_examples=None)
  assert [len(p) for p in parts] == [1000, 500, 3500]
  assert len(np.unique(np.concatenate(parts))) == 5000
  # Same check on the content: the 5,000 digits are all distinct.
  rows = [
    {x.tobytes() for x in getattr(mnist5k, s).images} for s in ("train", "validation", "test")
  ]
  assert sum(map(len, rows)) == 5000
  assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])


def test_mnist_5k_seeded(mnist5k):
  same = D.load_dataset("mnist_5k", seed=0)
  other = D.load_dataset("mnist_5k", seed=1)
  np.testing.assert_array_equal(same.train.images, mnist5k.train.images)
  np.testing.assert_array_equal(same.test.labels, mnist5k.test.labels)
  assert not np.array_equal(other.train.labels, mnist5k.train.labels)


def test_mnist_5k_cap_keeps_held_out(mnist5k):
  capped = D.load_dataset("mnist_5k", seed=0, max_train_examples=64)
  assert len(capped.train.labels) == 64
  np.testing.assert_array_equal(capped.validation.labels, mnist5k.validation.labels)
  np.testing.assert_array_equal(capped.test.labels, mnist5k.test.labels)


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(validation_fraction=0.9),
    dict(validation_fraction=-0.1),
    dict(max_train_examples=0),
    dict(image_size=32),
    dict(seed=-1),
  ],
)
def test_mnist_5k_bad_arguments(kwargs):
  with pytest.raises(D.DataError, match="mnist_5k"):
    D.load_dataset("mnist_5k", **kwargs)


# --------------------------------------------------------------------- IDX


def idx_bytes(array: np.ndarray) -> bytes:
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.tobytes()


def write_idx_dir(directory, n_train=30, n_test=10, gz=False, hw=(6, 5), overrides=None):
  """Tiny MNIST-layout directory; ``overrides`` maps file stem -> raw bytes."""
  rng = np.random.default_rng(0)
  files = {
    "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_train, *hw))),
    "train-labels-idx1-ubyte": idx_bytes(np.arange(n_train) % 10),
    "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (n_test, *hw))),
    "t10k-labels-idx1-ubyte": idx_bytes(np.arange(n_test) % 10),
  }
  files.update(overrides or {})
  directory.mkdir(parents=True, exist_ok=True)
  for stem, payload in files.items():
    if gz:
      (directory / (stem + ".gz")).write_bytes(gzip.compress(payload))
    else:
      (directory / stem).write_bytes(payload)
  return directory


@pytest.mark.parametrize("gz", [False, True])
def test_idx_loads(tmp_path, gz):
  d = write_idx_dir(tmp_path / "idx", gz=gz)
  ds = D.load_dataset(f"idx:{d}", validation_fraction=0.2, seed=3)
  assert ds.image_shape == (6, 5, 1) and ds.num_classes == 10
  assert [len(s.labels) for s in ds[1:4]] == [24, 6, 10]
  assert ds.train.images.dtype == np.float32 and ds.test.labels.dtype == np.int32
  np.testing.assert_array_equal(ds.test.labels, np.arange(10) % 10)
  # Train + validation recover the train file exactly once.
  labels = np.sort(np.concatenate([ds.train.labels, ds.validation.labels]))
  np.testing.assert_array_equal(labels, np.sort(np.arange(30) % 10))
  # "idx" + data_dir is the same loader.
  same = D.load_dataset("idx", data_dir=str(d), validation_fraction=0.2, seed=3)
  np.testing.assert_array_equal(same.train.images, ds.train.images)


def test_idx_dot_spelling(tmp_path):
  d = write_idx_dir(tmp_path / "idx")
  (d / "train-images-idx3-ubyte").rename(d / "train-images.idx3-ubyte")
  assert len(D.load_dataset(f"idx:{d}").test.labels) == 10


def test_parse_idx_values():
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  np.testing.assert_array_equal(D.parse_idx(idx_bytes(array)), array)


@pytest.mark.parametrize(
  "stem, payload, problem",
  [
    ("train-images-idx3-ubyte", b"\x12\x34\x08\x03" + b"\x00" * 20, "bad magic"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((30, 6, 5)))[:-7], "truncated"),
    ("t10k-labels-idx1-ubyte", b"\x00\x00", "truncated"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros(9)), "count mismatch"),
  ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_malformed(tmp_path, stem, payload, problem, gz):
  d = write_idx_dir(tmp_path / "idx", gz=gz, overrides={stem: payload})
  with pytest.raises(D.DataError, match=problem) as err:
    D.load_dataset(f"idx:{d}")
  assert stem in str(err.value)
  assert "\n" not in str(err.value)


def test_idx_corrupt_gzip(tmp_path):
  d = write_idx_dir(tmp_path / "idx", gz=True)
  (d / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
  with pytest.raises(D.DataError, match="t10k-images-idx3-ubyte.gz"):
    D.load_dataset(f"idx:{d}")


def test_idx_missing_directory_and_file(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(D.DataError, match=str(missing)):
    D.load_dataset(f"idx:{missing}")
  d = write_idx_dir(tmp_path / "idx")
  (d / "t10k-labels-idx1-ubyte").unlink()
  with pytest.raises(D.DataError, match="t10k-labels-idx1-ubyte"):
    D.load_dataset("idx", data_dir=str(d))
  with pytest.raises(D.DataError, match="data_dir"):
    D.load_dataset("idx")


def test_fashion_mnist_uses_data_dir_and_reports_missing(tmp_path):
  d = write_idx_dir(tmp_path / "fashion")
  ds = D.load_dataset("fashion_mnist", data_dir=str(d))
  assert ds.name == "fashion_mnist" and len(ds.test.labels) == 10
  with pytest.raises(D.DataError, match="dataset-fashion-mnist") as err:
    D.load_dataset("fashion_mnist", data_dir=str(tmp_path / "missing"))
  assert str(tmp_path / "missing") in str(err.value)


# -------------------------------------------------------------------- TFDS


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_mock_small(tfds_mock, name, shape):
  with tfds_mock(num_examples=20):
    ds = D.load_dataset(f"tfds:{name}", seed=0)
    again = D.load_dataset(f"tfds:{name}", seed=0)
  assert ds.name == f"tfds:{name}" and ds.image_shape == shape and ds.num_classes == 10
  assert [len(s.labels) for s in ds[1:4]] == [18, 2, 20]
  assert isinstance(ds.train.images, np.ndarray) and ds.train.images.shape == (18, *shape)
  assert ds.train.images.dtype == np.float32 and ds.train.labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train.images, again.train.images)


def test_tfds_mock_imagenet_lazy(tfds_mock):
  with tfds_mock(num_examples=12):
    ds = D.load_dataset("tfds:imagenet2012", image_size=32, max_train_examples=8)
    assert isinstance(ds.train.images, D.LazyImageSource)
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 1000
    assert [len(s.labels) for s in ds[1:4]] == [8, 1, 12]
    images, labels = D.get_batch(ds.train, np.array([0, 5, 2]))
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and ((0 <= labels) & (labels < 1000)).all()
    np.testing.assert_array_equal(ds.train.images[np.array([5])], images[1:2])
    np.testing.assert_array_equal(ds.train.labels[np.array([5])], labels[1:2])
    batches = list(D.iterate_eval(ds.test, 5))
  assert [b[0].shape for b in batches] == [(5, 32, 32, 3)] * 3
  assert [int(b[2].sum()) for b in batches] == [5, 5, 2]


@pytest.fixture
def prepared_mnist(tmp_path):
  """A tiny real "mnist" prepared as array_record, without TensorFlow.

  Yielding PIL images makes tfds encode PNGs with PIL; numpy images would
  need tf.image.encode_png.
  """
  pytest.importorskip("tensorflow_datasets")
  from PIL import Image
  from tensorflow_datasets.image_classification import mnist

  class TinyMNIST(mnist.MNIST, skip_registration=True):
    name = "mnist"

    def _split_generators(self, dl_manager):
      return {"train": self._examples(40, 0), "test": self._examples(7, 1)}

    def _examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        yield i, {"image": Image.fromarray(pixels, mode="L"), "label": i % 10}

  data_dir = tmp_path / "tfds"
  TinyMNIST(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return str(data_dir)


def test_tfds_real_array_record_without_tensorflow(prepared_mnist):
  ds = D.load_dataset("tfds:mnist", data_dir=prepared_mnist, seed=1)
  assert [len(s.labels) for s in ds[1:4]] == [36, 4, 7]
  # tfds shuffles records at preparation time, so compare as multisets.
  np.testing.assert_array_equal(np.sort(ds.test.labels), np.arange(7))
  assert ds.train.images.shape == (36, 28, 28, 1) and ds.train.images.dtype == np.float32
  labels = np.sort(np.concatenate([ds.train.labels, ds.validation.labels]))
  np.testing.assert_array_equal(labels, np.sort(np.arange(40) % 10))
  assert "tensorflow" not in sys.modules


def test_tfds_not_prepared_is_data_error(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(D.DataError) as err:
    D.load_dataset("tfds:cifar10", data_dir=str(tmp_path))
  message = str(err.value)
  # the cause first, then how to prepare it
  assert message.startswith(f"config.data.name=tfds:cifar10 is not prepared in {tmp_path}")
  assert "tfds build" in message and "download_and_prepare" in message
  assert "\n" not in message


def test_gs_data_dir_without_gcsfs_names_the_package_first(monkeypatch):
  """With neither gcsfs nor TensorFlow importable, a gs:// data_dir fails before tfds
  (whose own message calls the data set unprepared) and says what to install."""
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setitem(sys.modules, "gcsfs", None)  # None: `import gcsfs` raises
  monkeypatch.setitem(sys.modules, "tensorflow", None)
  with pytest.raises(D.DataError) as err:
    D.load_dataset("tfds:imagenet2012", data_dir="gs://bkt/tfds", lazy=True)
  message = str(err.value)
  assert message.startswith("config.data.data_dir=gs://bkt/tfds: reading gs:// needs gcsfs")
  assert '".[gcs]"' in message and "\n" not in message
  # with a gs backend importable the check lets tfds try (and say the set is not there)
  monkeypatch.setitem(sys.modules, "gcsfs", types.ModuleType("gcsfs"))
  assert tfds_source._remote_backend_missing("gs://bkt/tfds") is None


# ---------------------------------------------------------------- dispatch


@pytest.mark.parametrize("name", ["imagenet", "tfds:nope", "cifar", ""])
def test_unknown_name_lists_supported(name):
  with pytest.raises(D.DataError) as err:
    D.load_dataset(name)
  for supported in D.SUPPORTED_NAMES:
    assert supported in str(err.value)


# ---------------------------------------------------------------- batching


def test_batch_indices_deterministic_and_pure():
  a = D.batch_indices(103, 10, step=17, seed=5)
  b = D.batch_indices(103, 10, step=17, seed=5)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (10,) and a.dtype.kind == "i"
  a[:] = -1  # Mutating a result must not change later results.
  np.testing.assert_array_equal(D.batch_indices(103, 10, step=17, seed=5), b)
  assert not np.array_equal(D.batch_indices(103, 10, 17, seed=6), b)


def test_batch_indices_epochs():
  n, bs = 103, 10
  per_epoch = D.steps_per_epoch(n, bs)
  assert per_epoch == 10
  epochs = [
    np.concatenate([D.batch_indices(n, bs, e * per_epoch + s, 0) for s in range(per_epoch)])
    for e in range(3)
  ]
  for idx in epochs:
    assert len(idx) == 100 and len(np.unique(idx)) == 100  # no repetition
    assert idx.min() >= 0 and idx.max() < n
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_batch_indices_errors():
  with pytest.raises(D.DataError, match="64.*10|10.*64"):
    D.batch_indices(10, 64, step=0, seed=0)
  with pytest.raises(D.DataError):
    D.batch_indices(10, 2, step=-1, seed=0)


def test_get_batch(mnist5k):
  idx = np.array([3, 1, 4])
  images, labels = D.get_batch(mnist5k.train, idx)
  np.testing.assert_array_equal(images, mnist5k.train.images[idx])
  np.testing.assert_array_equal(labels, mnist5k.train.labels[idx])
  assert images.dtype == np.float32 and labels.dtype == np.int32


# -------------------------------------------------------------- evaluation


@pytest.mark.parametrize("n, bs", [(10, 4), (8, 4), (3, 5), (0, 4)])
def test_iterate_eval_padding(n, bs):
  images = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) + 1
  split = D.Split(images, np.arange(n, dtype=np.int32))
  batches = list(D.iterate_eval(split, bs))
  assert len(batches) == -(-n // bs)
  seen = []
  for x, y, mask in batches:
    assert x.shape == (bs, 1, 1, 1) and y.shape == (bs,) and mask.shape == (bs,)
    assert x.dtype == np.float32 and y.dtype == np.int32 and mask.dtype == bool
    assert (x[~mask] == 0).all() and (y[~mask] == 0).all()
    assert mask[: mask.sum()].all()  # valid rows first
    seen.extend(y[mask].tolist())
    np.testing.assert_array_equal(x[mask, 0, 0, 0], y[mask] + 1)
  assert seen == list(range(n))


def test_iterate_eval_bad_batch_size(mnist5k):
  with pytest.raises(D.DataError):
    next(D.iterate_eval(mnist5k.test, 0))


def test_tfds_small_rejects_image_size(tfds_mock):
  with tfds_mock(num_examples=4), pytest.raises(D.DataError, match="image_size"):
    D.load_dataset("tfds:cifar10", image_size=64)


def test_exported_uci_digits_load_as_an_idx_directory(tmp_path):
  from experiments import export_digits

  sizes = export_digits.export(str(tmp_path))
  ds = D.load_dataset(f"idx:{tmp_path}")
  assert sizes == {"train": 1438, "test": 359}
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  assert len(ds.train.labels) + len(ds.validation.labels) == 1438
  assert sorted(set(ds.test.labels.tolist())) == list(range(10))
