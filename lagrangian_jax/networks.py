"""Networks cut into consecutive segments, for Lagrangian (constrained) training.

A network is an ordered list of atomic layer groups ("blocks"). A *split* chooses after
which blocks a segment ends; the segments f_0, ..., f_L are glued by auxiliary states
h_l = f_l(h_{l-1}), which the training methods treat as variables. Every segment is its
own ``flax.linen`` Module with its own parameters, so training code applies each segment
as a pure function (``apply_segment``) or the whole network (``forward``).

At a split the segment's trailing nonlinearity is ``split_activation``: ``"identity"``
(DistProp: the ReLU at the split is removed, the state is pre-activation), ``"relu"``
(the ReLU ends the segment: states live in the activation domain) or ``"deferred"`` (the
ReLU opens the next segment: states are free pre-activations, the network's function is
unchanged). Inside a segment the usual ReLUs apply.

Every Dense and Conv kernel starts from ``init``: ``"lecun_normal"`` (flax's default,
variance 1/fan_in) or ``"he_normal"`` (variance 2/fan_in, ``jax.nn.initializers.he_normal``:
a ReLU halves the second moment of its input, so He's factor 2 keeps the activations'
second moment constant through a deep ReLU net, where lecun-normal halves it at every
layer and a 64-layer MLP starts with vanishing signals and gradients: backprop then fails
from depth 32, ``configs/deep_mlp_backprop.py``). Biases start at 0.

``dtype`` (``config.dtype``, a key of ``DTYPES``) is the type the segments compute in:
with ``"bfloat16"`` every Dense and Conv casts its input, kernel and bias to bfloat16 (the
parameters themselves stay float32, so do the optimizer's and the solver's states), and
every segment casts its output back to float32. The methods' maths (losses, constraints,
z-scores, softmax, reductions) thus always runs in float32, and the activations and
matmuls / convolutions between two segment boundaries in ``dtype``; ``"float32"`` is the
arithmetic without the key (every cast is to the type already there, a no-op).

``from_config`` builds a network from a ``config.network`` ConfigDict, ``build_network``
from keyword arguments named like its keys; both raise ``errors.ConfigError`` naming the
key. Convolutions and max pooling run as ``nn.Conv`` / ``nn.max_pool`` or as the CPU
kernels of ``lagrangian_jax.kernels`` (``conv_impl``, ``pool_impl``); the parameter trees
are the same either way.

Example:
  >>> net = build_network("mnist_cnn")
  >>> params = init_network(net, jax.random.key(0))
  >>> logits = forward(net, params, jnp.zeros((8, 28, 28, 1)))
  >>> logits.shape, net.state_shapes
  ((8, 10), ((128,),))
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lagrangian_jax import kernels
from lagrangian_jax.errors import ConfigError

__all__ = [
  "SplitNetwork",
  "NETWORK_NAMES",
  "SPLIT_ACTIVATIONS",
  "INITS",
  "DTYPES",
  "from_config",
  "build_network",
  "init_network",
  "apply_segment",
  "forward",
  "segment_output",
  "network_blocks",
  "has_dropout",
]


# ----------------------------------------------------------------------------------
# Layer specifications (hashable, so they can be flax Module attributes).
# ----------------------------------------------------------------------------------


class Conv(NamedTuple):
  """2-D convolution, NHWC / HWIO (PyTorch Conv2d translated)."""

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: kernels.Padding = "VALID"


class MaxPool(NamedTuple):
  """Max pooling with VALID padding (PyTorch MaxPool2d default)."""

  window: tuple[int, int]
  strides: tuple[int, int]


class Dense(NamedTuple):
  features: int


class Flatten(NamedTuple):
  pass


class ReLU(NamedTuple):
  pass


class Dropout(NamedTuple):
  """Inverted dropout: at training time (a key given) each unit is zeroed with
  probability ``rate`` and the others scaled by ``1 / (1 - rate)``; the identity at
  evaluation (no key)."""

  rate: float


Layer = Conv | MaxPool | Dense | Flatten | ReLU | Dropout


class Block(NamedTuple):
  """An atomic layer group; a split may only fall between blocks.

  ``act`` says the block ends with a nonlinearity: a ReLU inside a segment,
  ``split_activation`` when a segment ends after this block.
  """

  layers: tuple[Layer, ...]
  act: bool = True


class SplitNetwork(NamedTuple):
  """A network cut into segments; see ``build_network``."""

  name: str
  segments: tuple[nn.Module, ...]
  input_shape: tuple[int, ...]
  state_shapes: tuple[tuple[int, ...], ...]
  num_classes: int


NETWORK_NAMES = ("mnist_cnn", "cifar_lenet", "alexnet", "mlp")
SPLIT_ACTIVATIONS = ("identity", "relu", "deferred")
# config.network.init -> kernel initialiser of every Dense and Conv (truncated normals
# with variance scale/fan_in, as flax defines them; biases are zeros either way).
INITS = {
  "lecun_normal": nn.initializers.lecun_normal,  # flax's default: scale 1
  "he_normal": nn.initializers.he_normal,  # scale 2: keeps ReLU activations' variance
}


# config.dtype -> what the segments compute in (parameters are float32 either way).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _pool(window: int = 2, stride: int = 2) -> tuple[Layer, ...]:
  return (MaxPool((window, window), (stride, stride)),)


# ----------------------------------------------------------------------------------
# Network definitions: ordered blocks + default split.
# ----------------------------------------------------------------------------------
# Where PyTorch has Conv-ReLU-MaxPool we write Conv-MaxPool(-ReLU): max pooling commutes
# with the (monotone) ReLU, so this is the same function, pools 4x more data before the
# ReLU, and lets a split remove/keep "the" ReLU as the block's trailing activation.


def _mnist_cnn(num_classes: int, **_: Any) -> tuple[tuple[Block, ...], tuple[int, ...]]:
  # Split 2 is the paper's (after the convolutions: 9,216 features), split 3 (default)
  # the authors' code's (after the 128-unit layer).
  blocks = (
    Block((Conv(32, (3, 3)),)),
    Block((Conv(64, (3, 3)), *_pool(), Flatten())),
    Block((Dense(128),)),
    Block((Dense(num_classes),), act=False),
  )
  return blocks, (3,)


def _cifar_lenet(num_classes: int, **_: Any):
  blocks = (
    Block((Conv(6, (5, 5)), *_pool())),
    Block((Conv(16, (5, 5)), *_pool(), Flatten())),
    Block((Dense(120),)),
    Block((Dense(84),)),
    Block((Dense(num_classes),), act=False),
  )
  return blocks, (4,)


def _alexnet(num_classes: int, dropout: float = 0.0, **_: Any):
  # torchvision AlexNet without AdaptiveAvgPool (an identity at 224x224; at other sizes
  # the flattened state is whatever the features produce, e.g. 256 at 64x64); dropout
  # before the first two classifier layers, as torchvision (and Krizhevsky 2014) have it.
  same2, same1 = ((2, 2), (2, 2)), ((1, 1), (1, 1))
  drop = (Dropout(dropout),) if dropout > 0 else ()
  blocks = (
    Block((Conv(64, (11, 11), (4, 4), same2), *_pool(3, 2))),
    Block((Conv(192, (5, 5), (1, 1), same2), *_pool(3, 2))),
    Block((Conv(384, (3, 3), (1, 1), same1),)),
    Block((Conv(256, (3, 3), (1, 1), same1),)),
    Block((Conv(256, (3, 3), (1, 1), same1), *_pool(3, 2), Flatten())),
    Block((*drop, Dense(4096))),
    Block((*drop, Dense(4096))),
    Block((Dense(num_classes),), act=False),
  )
  return blocks, (5,)


def _mlp(num_classes: int, depth: int, width: int, **_: Any):
  first = Block((Flatten(), Dense(width)))
  hidden = Block((Dense(width),))
  blocks = (first,) + (hidden,) * (depth - 1) + (Block((Dense(num_classes),), act=False),)
  return blocks, tuple(range(1, depth + 1))  # default: split after every block


_REGISTRY = {
  "mnist_cnn": (_mnist_cnn, (28, 28, 1)),
  "cifar_lenet": (_cifar_lenet, (32, 32, 3)),
  "alexnet": (_alexnet, (224, 224, 3)),
  "mlp": (_mlp, (28, 28, 1)),
}
_DEFAULT_NUM_CLASSES = {"alexnet": 1000}


def _error(key: str, message: str) -> ConfigError:
  """``key`` is a ``config.network`` key, or ``""`` for an argument that is none."""
  return ConfigError(f"config.network.{key}: {message}" if key else f"config.network: {message}")


def network_blocks(
  name: str, *, num_classes: int = 10, depth: int = 4, width: int = 128, dropout: float = 0.0
):
  """Returns ``(blocks, default_split)`` of a named network.

  Example:
    >>> blocks, split = network_blocks("mnist_cnn")
    >>> len(blocks), split
    (4, (3,))
  """
  if name not in _REGISTRY:
    raise _error("name", f"unknown network {name!r}; allowed: {', '.join(NETWORK_NAMES)}")
  return _REGISTRY[name][0](num_classes=num_classes, depth=depth, width=width, dropout=dropout)


# ----------------------------------------------------------------------------------
# Segment module.
# ----------------------------------------------------------------------------------


class Segment(nn.Module):
  """A sequence of layer specs applied in order (one network segment).

  Submodules are named ``Conv_k`` / ``Dense_k`` whatever ``conv_impl`` is, so the
  parameter trees of both formulations match. ``kernel_init`` names their kernel
  initialiser (a key of ``INITS``; a name, not a function, so that segments stay
  comparable and hashable: equal segments share compiled programs), ``dtype`` the type of
  its activations and matmuls (a key of ``DTYPES``; parameters are float32 and the output
  is cast to float32: module docstring).
  """

  layers: tuple[Layer, ...]
  conv_impl: str = "xla"  # resolved: xla | patches | rows
  pool_impl: str = "xla"  # resolved: xla | fast
  kernel_init: str = "lecun_normal"  # config.network.init
  dtype: str = "float32"  # config.dtype

  @nn.compact
  def __call__(self, x, rng=None):
    conv = (
      nn.Conv if self.conv_impl == "xla" else partial(kernels.PatchConv, formulation=self.conv_impl)
    )
    kernel_init = INITS[self.kernel_init]()
    dtypes = {"dtype": DTYPES[self.dtype], "param_dtype": jnp.float32}
    n_conv = n_dense = n_drop = 0
    for layer in self.layers:
      if isinstance(layer, Conv):
        x = conv(
          layer.features,
          layer.kernel_size,
          layer.strides,
          layer.padding,
          kernel_init=kernel_init,
          name=f"Conv_{n_conv}",
          **dtypes,
        )(x)
        n_conv += 1
      elif isinstance(layer, Dense):
        x = nn.Dense(layer.features, kernel_init=kernel_init, name=f"Dense_{n_dense}", **dtypes)(x)
        n_dense += 1
      elif isinstance(layer, MaxPool):
        if self.pool_impl == "xla":
          x = nn.max_pool(x, layer.window, layer.strides, "VALID")
        else:
          x = kernels.max_pool_fast(x, layer.window, layer.strides)
      elif isinstance(layer, Flatten):
        x = x.reshape(x.shape[0], -1)
      elif isinstance(layer, ReLU):
        x = nn.relu(x)
      elif isinstance(layer, Dropout):
        if rng is not None:  # training; evaluation passes no key
          keep = jax.random.bernoulli(jax.random.fold_in(rng, n_drop), 1 - layer.rate, x.shape)
          x = jnp.where(keep, x / (1 - layer.rate), 0).astype(x.dtype)
        n_drop += 1
      else:  # pragma: no cover - specs are internal
        raise TypeError(f"unknown layer spec {layer!r}")
    # The methods' maths starts here: losses, constraints and reductions in float32.
    return x.astype(jnp.float32)


# ----------------------------------------------------------------------------------
# Building.
# ----------------------------------------------------------------------------------


def _resolve_split(
  split, default: tuple[int, ...], num_blocks: int, first_split: int = 1
) -> tuple[int, ...]:
  first_split = _positive_int("first_split", first_split)
  if first_split != 1 and split != "every":
    raise _error("first_split", f"applies to split='every' only, got split={split!r}")
  if first_split > max(num_blocks - 1, 1):
    raise _error(
      "first_split", f"{first_split} leaves no split: the network has {num_blocks} blocks"
    )
  valid = (
    f"integers in 1..{num_blocks - 1}, strictly increasing"
    if num_blocks > 1
    else "[] (one block only)"
  )
  if isinstance(split, str):
    if split == "default":
      return default
    if split == "every":
      return tuple(range(first_split, num_blocks))
    raise _error(
      "split", f"unknown value {split!r}; allowed: 'default', 'every', or a list of {valid}"
    )
  if not isinstance(split, Sequence) or not all(
    isinstance(s, int) and not isinstance(s, bool) for s in split
  ):
    raise _error("split", f"{split!r} is not 'default', 'every', or a list of {valid}")
  split = tuple(split)
  bad = [s for s in split if not 1 <= s <= num_blocks - 1]
  if bad:
    raise _error(
      "split", f"value(s) {bad} out of range; allowed: {valid} (network has {num_blocks} blocks)"
    )
  if any(b <= a for a, b in zip(split, split[1:])):
    raise _error("split", f"{list(split)} is not strictly increasing; allowed: {valid}")
  return split


def _segment_layers(blocks, split, split_activation) -> list[tuple[Layer, ...]]:
  bounds = (0, *split, len(blocks))
  segments = []
  for start, stop in zip(bounds[:-1], bounds[1:]):
    layers: list[Layer] = []
    if split_activation == "deferred" and start > 0 and blocks[start - 1].act:
      layers.append(ReLU())
    for k in range(start, stop):
      layers.extend(blocks[k].layers)
      at_split = k == stop - 1 and stop != len(blocks)
      if blocks[k].act and (not at_split or split_activation == "relu"):
        layers.append(ReLU())
    segments.append(tuple(layers))
  return segments


def _positive_int(key: str, value, what: str = ""):
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise _error(key, f"{what}must be a positive integer, got {value!r}")
  return value


def build_network(
  name: str,
  *,
  num_classes: int | None = None,
  input_shape: Sequence[int] | None = None,
  split="default",
  split_activation: str = "identity",
  conv_impl: str = "auto",
  pool_impl: str = "auto",
  depth: int | None = None,
  width: int | None = None,
  init: str = "lecun_normal",
  dropout: float = 0.0,
  dtype: str = "float32",
  first_split: int = 1,
) -> SplitNetwork:
  """Builds a named network cut into segments.

  Args:
    name: one of ``NETWORK_NAMES``.
    num_classes: logits size (default 10; 1000 for alexnet).
    input_shape: per-example input shape (default: the network's own).
    split: ``"default"`` (the paper's split), ``"every"`` (after every block) or
      increasing block indices in 1..num_blocks-1 after which to split; ``[]`` gives a
      single segment.
    split_activation: ``"identity"`` (DistProp), ``"relu"`` or ``"deferred"`` (module
      docstring).
    conv_impl: ``"auto"`` (rows on CPU, xla elsewhere), ``"xla"`` (nn.Conv),
      ``"patches"`` or ``"rows"`` (``kernels.PatchConv``'s two formulations).
    pool_impl: ``"auto"`` (fast on CPU, xla elsewhere), ``"xla"`` (nn.max_pool) or
      ``"fast"`` (``kernels.max_pool_fast``).
    depth, width: mlp only (defaults 4 and 128).
    init: kernel initialiser of every Dense and Conv, a key of ``INITS``:
      ``"lecun_normal"`` (flax's default) or ``"he_normal"`` (keeps the activations'
      variance through deep ReLU nets; module docstring).
    dtype: what the segments compute in, a key of ``DTYPES`` (``config.dtype``; module
      docstring): parameters stay float32, segment outputs are float32.
    first_split: with ``split="every"``, the block after which the first split comes:
      the first segment holds blocks ``0 .. first_split - 1``, every later block is a
      segment of its own (DistProp's first block then reads the input through several
      layers; ``configs/deep_mlp_distprop.py``).

  Raises:
    ConfigError: ``config.network.<argument>: ...`` for the arguments that are
      ``config.network`` keys (name, split, split_activation, conv_impl, depth, width,
      init), ``config.dtype: ...`` for ``dtype``,
      ``config.network: <argument> ...`` for the others.

  Example:
    >>> net = build_network("mlp", depth=3, width=64)
    >>> len(net.segments), net.state_shapes
    (4, ((64,), (64,), (64,)))
    >>> net = build_network("mlp", dtype="bfloat16")  # computes in bf16, returns float32
    >>> params = init_network(net, jax.random.key(0))
    >>> params[0]["Dense_0"]["kernel"].dtype, forward(net, params, jnp.ones((2, 784))).dtype
    (dtype('float32'), dtype('float32'))
  """
  depth, width, num_classes = _checked_sizes(name, depth, width, num_classes)
  _check_options(name, split_activation, init, dropout)
  if not isinstance(dtype, str) or dtype not in DTYPES:
    raise ConfigError(f"config.dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
  conv = kernels.resolve_conv_impl(conv_impl)
  pool = kernels.resolve_pool_impl(pool_impl)

  blocks, default_split = network_blocks(
    name, num_classes=num_classes, depth=depth, width=width, dropout=dropout
  )
  split = _resolve_split(split, default_split, len(blocks), first_split)
  shape = _checked_input_shape(name, input_shape)
  segments = tuple(
    Segment(layers, conv, pool, init, dtype)
    for layers in _segment_layers(blocks, split, split_activation)
  )
  shapes = _segment_shapes(name, segments, shape)
  assert shapes[-1] == (num_classes,), shapes
  return SplitNetwork(name, segments, shape, tuple(shapes[1:-1]), num_classes)


def _checked_sizes(name: str, depth, width, num_classes) -> tuple[int, int, int]:
  """``(depth, width, num_classes)`` with their defaults, each a positive integer."""
  if name not in _REGISTRY:
    raise _error("name", f"unknown network {name!r}; allowed: {', '.join(NETWORK_NAMES)}")
  if name != "mlp" and (depth is not None or width is not None):
    key = "depth" if depth is not None else "width"
    raise _error(key, f"only applies to name='mlp', got name={name!r}")
  depth = _positive_int("depth", 4 if depth is None else depth)
  width = _positive_int("width", 128 if width is None else width)
  if num_classes is None:
    num_classes = _DEFAULT_NUM_CLASSES.get(name, 10)
  num_classes = _positive_int("", num_classes, "num_classes ")
  return depth, width, num_classes


def _check_options(name: str, split_activation: str, init: str, dropout) -> None:
  if split_activation not in SPLIT_ACTIVATIONS:
    raise _error(
      "split_activation",
      f"unknown value {split_activation!r}; allowed: {', '.join(SPLIT_ACTIVATIONS)}",
    )
  if not isinstance(init, str) or init not in INITS:
    raise _error("init", f"unknown value {init!r}; allowed: {', '.join(INITS)}")
  if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
    raise _error("dropout", f"must be in [0, 1), got {dropout!r}")
  if dropout and name != "alexnet":
    raise _error("dropout", f"only alexnet has dropout layers, got name={name!r}")


def _checked_input_shape(name: str, input_shape) -> tuple[int, ...]:
  """The per-example input shape (the network's own by default), checked."""
  default_shape = _REGISTRY[name][1]
  shape = tuple(default_shape if input_shape is None else input_shape)
  if not all(isinstance(d, int) and d >= 1 for d in shape) or (name != "mlp" and len(shape) != 3):
    raise _error(
      "", f"input_shape {input_shape!r} is not {len(default_shape)} positive ints (H, W, C)"
    )
  return shape


def _segment_shapes(name: str, segments, shape) -> list[tuple[int, ...]]:
  """``[input shape, each segment's output shape...]`` by abstract evaluation: costs no
  FLOPs even for AlexNet@224."""
  shapes = [shape]
  for seg in segments:
    try:
      out = jax.eval_shape(
        lambda x, seg=seg: seg.init_with_output(jax.random.key(0), x)[0],
        jax.ShapeDtypeStruct((1, *shapes[-1]), jnp.float32),
      )
    except (TypeError, ValueError) as e:
      raise _error("", f"input_shape {shape} is too small for {name!r} ({e})") from None
    except ZeroDivisionError:  # a Dense initialiser's fan-in of an empty feature map
      raise _error(
        "", f"input_shape {shape} is too small for {name!r} (a feature map became empty)"
      ) from None
    if 0 in out.shape:
      raise _error(
        "", f"input_shape {shape} is too small for {name!r} (a feature map became empty)"
      )
    shapes.append(tuple(out.shape[1:]))
  return shapes


def _split_value(split):
  # Command-line overrides are strings: "2" or "1,2" -> [2] or [1, 2], "" -> [].
  if isinstance(split, str) and split not in ("default", "every"):
    try:
      return [int(s) for s in split.split(",") if s.strip()]
    except ValueError:
      raise ConfigError(
        f"config.network.split: expected 'default', 'every' or a comma "
        f"separated list of block indices, got {split!r}"
      ) from None
  return split


def _network_extras(network_config):
  # depth/width 0 mean "unset" in configs, and build_network rejects them for non-mlp;
  # a config without ``init`` (written before the key existed) gets flax's default.
  extras = {}
  if network_config.get("depth"):
    extras["depth"] = network_config.depth
  if network_config.get("width"):
    extras["width"] = network_config.width
  if "init" in network_config:
    extras["init"] = network_config.init
  if network_config.get("dropout"):
    extras["dropout"] = network_config.dropout
  if network_config.get("first_split", 1) != 1:
    extras["first_split"] = network_config.first_split
  return extras


def from_config(
  network_config, *, num_classes: int, input_shape: Sequence[int], dtype: str = "float32"
) -> SplitNetwork:
  """Builds the network that a ``config.network`` ConfigDict describes, computing in
  ``dtype`` (``config.dtype``, outside the section: ``build_network``).

  ``split`` may be a string of comma separated block indices (as command-line overrides
  give it); ``depth`` / ``width`` of 0 mean "the default", a missing ``init``
  ``"lecun_normal"``. ``num_classes`` and ``input_shape`` come from the data set.

  Raises:
    ConfigError: naming the bad key, e.g. ``config.network.split: ...``.

  Example:
    >>> import ml_collections
    >>> cfg = ml_collections.ConfigDict(dict(name="mlp", split="1,2", depth=3, width=0,
    ...     split_activation="relu", conv_impl="auto", init="he_normal"))
    >>> from_config(cfg, num_classes=10, input_shape=(28, 28, 1)).state_shapes
    ((128,), (128,))
  """
  return build_network(
    network_config.name,
    num_classes=num_classes,
    input_shape=tuple(input_shape),
    split=_split_value(network_config.split),
    split_activation=network_config.split_activation,
    conv_impl=network_config.conv_impl,
    dtype=dtype,
    **_network_extras(network_config),
  )


# ----------------------------------------------------------------------------------
# Pure functions on (net, params).
# ----------------------------------------------------------------------------------


def init_network(net: SplitNetwork, rng: jax.Array) -> tuple:
  """Initialises every segment; returns a tuple of per-segment param dicts.

  Segment i uses ``fold_in(rng, i)``, so identical stacked segments (mlp with
  split="every") never share weights.

  Example:
    >>> params = init_network(build_network("mlp"), jax.random.key(0))
    >>> len(params)
    5
  """
  shapes = (net.input_shape, *net.state_shapes)
  return tuple(
    _init_segment(seg, jax.random.fold_in(rng, i), shape)
    for i, (seg, shape) in enumerate(zip(net.segments, shapes))
  )


@partial(jax.jit, static_argnums=(0, 2))
def _init_segment(seg: nn.Module, key: jax.Array, shape: tuple[int, ...]):
  # Jitted: eager init dispatches (and compiles) every op separately, which took seconds
  # per network; under jit the dummy forward pass is dead code.
  return seg.init(key, jnp.zeros((1, *shape), jnp.float32))["params"]


def apply_segment(
  net: SplitNetwork, params: tuple, index: int, h: jax.Array, rng: jax.Array | None = None
) -> jax.Array:
  """Applies segment ``index`` to a batch ``h`` of shape (B, *shape).

  ``rng``: a key for the segment's dropout layers (training); None (evaluation) makes
  them the identity.

  Raises IndexError for an ``index`` outside the segments (a caller's bug, not a config
  value).

  Example:
    >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
    >>> apply_segment(net, p, 0, jnp.zeros((2, 28, 28, 1))).shape
    (2, 128)
  """
  if not isinstance(index, int) or not -len(net.segments) <= index < len(net.segments):
    raise IndexError(f"index: {index!r} out of range; allowed: 0..{len(net.segments) - 1}")
  return _apply(net.segments[index], params[index], h, rng)


@partial(jax.jit, static_argnums=0)
def _apply(seg: nn.Module, params, h, rng=None):
  # Jitted per (segment, shapes): eager calls run one compiled program instead of
  # dispatching dozens of im2col slices one by one; inside an outer jit/grad this is
  # simply inlined.
  return seg.apply({"params": params}, h, rng)


def has_dropout(net: SplitNetwork) -> bool:
  """Whether any segment has a dropout layer (``config.network.dropout > 0``)."""
  return any(isinstance(x, Dropout) for seg in net.segments for x in seg.layers)


def segment_output(
  net: SplitNetwork, params: tuple, x: jax.Array, rng: jax.Array | None = None
) -> list[jax.Array]:
  """Outputs of every segment when run in sequence from ``x`` (last = logits); segment
  ``i``'s dropout key is ``fold_in(rng, i)`` (no ``rng``: no dropout).

  Example:
    >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
    >>> [o.shape for o in segment_output(net, p, jnp.zeros((2, 28, 28, 1)))]
    [(2, 128), (2, 10)]
  """
  outs = []
  h = x
  for i in range(len(net.segments)):
    h = apply_segment(net, params, i, h, None if rng is None else jax.random.fold_in(rng, i))
    outs.append(h)
  return outs


def forward(
  net: SplitNetwork, params: tuple, x: jax.Array, rng: jax.Array | None = None
) -> jax.Array:
  """Logits f_L(...f_1(f_0(x))) of shape (B, num_classes).

  Example:
    >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
    >>> forward(net, p, jnp.zeros((2, 28, 28, 1))).shape
    (2, 10)
  """
  return segment_output(net, params, x, rng)[-1]
