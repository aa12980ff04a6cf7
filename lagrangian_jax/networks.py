"""Networks split into consecutive segments for Lagrangian (constrained) training.

A network is an ordered list of atomic layer groups ("blocks").  A *split*
chooses after which blocks a segment ends; the segments f_0, ..., f_L are
glued by auxiliary states h_l = f_l(h_{l-1}).  Every segment is its own
``flax.linen`` Module with its own parameters, so training code can apply
each segment as a pure function (``apply_segment``) or the whole network
(``forward``).

At a split the segment's trailing nonlinearity is ``split_activation``:
``"identity"`` (DistProp: the ReLU at the split is removed, the state is
pre-activation) or ``"relu"`` (ExtraProp: the ReLU is kept).  Inside a
segment the usual ReLUs apply.

Convolutions and max pooling come in interchangeable formulations
(``conv_impl`` / ``pool_impl``) because XLA's convolution and
``reduce_window`` *gradients* are slow on CPU; the "patches" convolution
(im2col followed by one matmul) uses the same parameter names and shapes as
``nn.Conv`` (``kernel`` (kh, kw, cin, cout), ``bias``) so parameters can be
moved between formulations.  See ``benchmarks/conv_formulations.py``.

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
from typing import Any, NamedTuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "NetworkError",
    "SplitNetwork",
    "NETWORK_NAMES",
    "CONV_IMPLS",
    "POOL_IMPLS",
    "SPLIT_ACTIVATIONS",
    "build_network",
    "init_network",
    "apply_segment",
    "forward",
    "segment_output",
    "network_blocks",
    "resolve_conv_impl",
    "resolve_pool_impl",
    "PatchConv",
    "conv2d_patches",
    "max_pool_fast",
]


class NetworkError(ValueError):
    """Bad network configuration (unknown name, bad split, bad option)."""


# --------------------------------------------------------------------------
# Layer specifications (hashable, so they can be flax Module attributes).
# --------------------------------------------------------------------------

Padding = Union[str, tuple[tuple[int, int], ...]]


class Conv(NamedTuple):
    """2-D convolution, NHWC / HWIO (PyTorch Conv2d translated)."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "VALID"


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


Layer = Union[Conv, MaxPool, Dense, Flatten, ReLU]


class Block(NamedTuple):
    """An atomic layer group; a split may only fall between blocks.

    ``act`` says the block ends with a nonlinearity: a ReLU inside a
    segment, ``split_activation`` when a segment ends after this block.
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
CONV_IMPLS = ("auto", "xla", "patches", "patches_auto", "patches_slices", "patches_separable", "patches_lax")
POOL_IMPLS = ("auto", "xla", "fast")
SPLIT_ACTIVATIONS = ("identity", "relu")

# Which patch extraction "patches" means; chosen from the CPU benchmark
# (benchmarks/conv_formulations.py): explicit slicing has a cheap, fusible
# gradient (pads/adds), while conv_general_dilated_patches is itself a
# convolution whose input-gradient is another slow CPU convolution.
# "auto" = one slice per tap for small kernels (fastest steps), rows-then-
# columns slicing for large ones (one slice per tap took 5+ s to compile
# for AlexNet's 11x11 kernel, kh + kw slices about 1 s).
_DEFAULT_PATCH_METHOD = "auto"
_MAX_TAPS_FOR_SLICES = 9


def _pool(window: int = 2, stride: int = 2) -> tuple[Layer, ...]:
    return (MaxPool((window, window), (stride, stride)),)


# --------------------------------------------------------------------------
# Network definitions: ordered blocks + default split.
# --------------------------------------------------------------------------
# Where PyTorch has Conv-ReLU-MaxPool we write Conv-MaxPool(-ReLU): max
# pooling commutes with the (monotone) ReLU, so this is the same function,
# pools 4x more data before the ReLU, and lets a split remove/keep "the"
# ReLU as the block's trailing activation.


def _mnist_cnn(num_classes: int, **_: Any) -> tuple[tuple[Block, ...], tuple[int, ...]]:
    blocks = (
        Block((Conv(32, (3, 3)),)),
        Block((Conv(64, (3, 3)), *_pool(), ReLU(), Flatten(), Dense(128))),
        Block((Dense(num_classes),), act=False),
    )
    return blocks, (2,)


def _cifar_lenet(num_classes: int, **_: Any):
    blocks = (
        Block((Conv(6, (5, 5)), *_pool())),
        Block((Conv(16, (5, 5)), *_pool(), Flatten())),
        Block((Dense(120),)),
        Block((Dense(84),)),
        Block((Dense(num_classes),), act=False),
    )
    return blocks, (4,)


def _alexnet(num_classes: int, **_: Any):
    # torchvision AlexNet without dropout and without AdaptiveAvgPool (an
    # identity at 224x224; at other sizes the flattened state is whatever
    # the features produce, e.g. 256 at 64x64).
    blocks = (
        Block((Conv(64, (11, 11), (4, 4), ((2, 2), (2, 2))), *_pool(3, 2))),
        Block((Conv(192, (5, 5), (1, 1), ((2, 2), (2, 2))), *_pool(3, 2))),
        Block((Conv(384, (3, 3), (1, 1), ((1, 1), (1, 1))),)),
        Block((Conv(256, (3, 3), (1, 1), ((1, 1), (1, 1))),)),
        Block((Conv(256, (3, 3), (1, 1), ((1, 1), (1, 1))), *_pool(3, 2), Flatten())),
        Block((Dense(4096),)),
        Block((Dense(4096),)),
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


def network_blocks(name: str, *, num_classes: int = 10, depth: int = 4, width: int = 128):
    """Return ``(blocks, default_split)`` of a named network.

    Example:
        >>> blocks, split = network_blocks("mnist_cnn")
        >>> len(blocks), split
        (3, (2,))
    """
    if name not in _REGISTRY:
        raise NetworkError(f"name: unknown network {name!r}; allowed: {', '.join(NETWORK_NAMES)}")
    return _REGISTRY[name][0](num_classes=num_classes, depth=depth, width=width)


# --------------------------------------------------------------------------
# Convolution / pooling formulations.
# --------------------------------------------------------------------------


def _explicit_padding(padding: Padding, in_hw, kernel_hw, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper()))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _im2col_slices(x, kernel_hw, strides, pads):
    """(B,H,W,C) -> (B,Ho,Wo,kh*kw*C) in (kh, kw, C) order, by strided slicing.

    Its gradient is a sum of padded slices, which XLA:CPU fuses well (unlike
    the gradient of a convolution).
    """
    kh, kw = kernel_hw
    sh, sw = strides
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    b, hp, wp, c = x.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cols = [
        lax.slice(x, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(cols, axis=-1)


def _im2col_separable(x, kernel_hw, strides, pads):
    """Like ``_im2col_slices`` with kh + kw slices (rows, then columns).

    Output features are in (kw, kh, C) order.  Compile time of the
    one-slice-per-tap version grows badly with kh*kw (seconds for AlexNet's
    11x11); slicing rows and columns separately keeps it small.
    """
    kh, kw = kernel_hw
    sh, sw = strides
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    b, hp, wp, c = x.shape
    ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    rows = jnp.concatenate(
        [lax.slice(x, (0, i, 0, 0), (b, i + sh * (ho - 1) + 1, wp, c), (1, sh, 1, 1)) for i in range(kh)], axis=-1
    )
    c2 = kh * c
    return jnp.concatenate(
        [lax.slice(rows, (0, 0, j, 0), (b, ho, j + sw * (wo - 1) + 1, c2), (1, 1, sw, 1)) for j in range(kw)], axis=-1
    )


def conv2d_patches(x, kernel, bias=None, strides=(1, 1), padding: Padding = "VALID", method: str = "slices"):
    """Convolution as patches @ kernel; same result as ``nn.Conv``.

    ``kernel`` has nn.Conv's HWIO shape (kh, kw, cin, cout).  ``method`` is
    ``"slices"`` (im2col, one shifted slice per kernel tap),
    ``"separable"`` (kh row slices then kw column slices), ``"lax"``
    (``lax.conv_general_dilated_patches``) or ``"auto"`` (slices for
    kernels up to 3x3, else separable).

    Example:
        >>> y = conv2d_patches(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))
        >>> y.shape
        (2, 6, 6, 4)
    """
    kh, kw, cin, cout = kernel.shape
    strides = tuple(strides)
    pads = _explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
    if method == "auto":
        method = "slices" if kh * kw <= _MAX_TAPS_FOR_SLICES else "separable"
    if method == "slices":
        patches = _im2col_slices(x, (kh, kw), strides, pads)
        k2 = kernel.reshape(kh * kw * cin, cout)
    elif method == "separable":
        patches = _im2col_separable(x, (kh, kw), strides, pads)
        # Features come out in (kw, kh, cin) order.
        k2 = kernel.transpose(1, 0, 2, 3).reshape(kw * kh * cin, cout)
    elif method == "lax":
        patches = lax.conv_general_dilated_patches(
            x, (kh, kw), strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        # conv_general_dilated_patches orders features as (cin, kh, kw).
        k2 = kernel.transpose(2, 0, 1, 3).reshape(cin * kh * kw, cout)
    else:
        raise NetworkError(f"method: unknown patch method {method!r}; allowed: auto, slices, separable, lax")
    b, ho, wo, k = patches.shape
    # An explicit 2-D matmul maps onto one GEMM call on CPU.
    y = (patches.reshape(b * ho * wo, k) @ k2).reshape(b, ho, wo, cout)
    return y if bias is None else y + bias


class PatchConv(nn.Module):
    """Drop-in ``nn.Conv`` replacement computing im2col + matmul.

    Parameters are named and shaped exactly like ``nn.Conv``'s.

    Example:
        >>> m = PatchConv(4, (3, 3))
        >>> p = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
        >>> p["params"]["kernel"].shape
        (3, 3, 3, 4)
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = "VALID"
    method: str = _DEFAULT_PATCH_METHOD

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        # Same initialisers as nn.Conv so both formulations start identically.
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return conv2d_patches(x, kernel, bias, self.strides, self.padding, self.method)


def max_pool_fast(x, window=(2, 2), strides=(2, 2)):
    """Max pooling (VALID) without ``reduce_window``; equals ``nn.max_pool``.

    Non-overlapping windows use a reshape + max; overlapping ones (AlexNet's
    3/2) take the max over strided slices.  Both have elementwise gradients,
    unlike ``reduce_window``'s select-and-scatter.

    Example:
        >>> max_pool_fast(jnp.arange(16.).reshape(1, 4, 4, 1))[0, :, :, 0]
        Array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """
    (wh, ww), (sh, sw) = tuple(window), tuple(strides)
    b, h, w, c = x.shape
    ho, wo = (h - wh) // sh + 1, (w - ww) // sw + 1
    if (wh, ww) == (sh, sw):
        x = x[:, : ho * sh, : wo * sw]  # VALID: drop the ragged border
        return x.reshape(b, ho, sh, wo, sw, c).max(axis=(2, 4))
    out = None
    for i in range(wh):
        for j in range(ww):
            s = lax.slice(x, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
            out = s if out is None else jnp.maximum(out, s)
    return out


def resolve_conv_impl(conv_impl: str, backend: str | None = None) -> str:
    """Map ``conv_impl`` to a concrete one: xla | patches_<method>.

    Example:
        >>> resolve_conv_impl("auto", "cpu"), resolve_conv_impl("auto", "gpu")
        ('patches_auto', 'xla')
    """
    if conv_impl not in CONV_IMPLS:
        raise NetworkError(f"conv_impl: unknown value {conv_impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    if conv_impl == "auto":
        backend = backend or jax.default_backend()
        conv_impl = "patches" if backend == "cpu" else "xla"
    if conv_impl == "patches":
        conv_impl = "patches_" + _DEFAULT_PATCH_METHOD
    return conv_impl


def resolve_pool_impl(pool_impl: str, backend: str | None = None) -> str:
    """Map ``pool_impl`` to a concrete one: xla | fast.

    Example:
        >>> resolve_pool_impl("auto", "cpu"), resolve_pool_impl("auto", "gpu")
        ('fast', 'xla')
    """
    if pool_impl not in POOL_IMPLS:
        raise NetworkError(f"pool_impl: unknown value {pool_impl!r}; allowed: {', '.join(POOL_IMPLS)}")
    if pool_impl == "auto":
        backend = backend or jax.default_backend()
        pool_impl = "fast" if backend == "cpu" else "xla"
    return pool_impl


# --------------------------------------------------------------------------
# Segment module.
# --------------------------------------------------------------------------


class Segment(nn.Module):
    """A sequence of layer specs applied in order (one network segment).

    Submodules are named ``Conv_k`` / ``Dense_k`` regardless of
    ``conv_impl`` so parameter trees of different formulations match.
    """

    layers: tuple[Layer, ...]
    conv_impl: str = "xla"  # concrete: xla | patches_{auto,slices,separable,lax}
    pool_impl: str = "xla"  # concrete: xla | fast

    @nn.compact
    def __call__(self, x):
        n_conv = n_dense = 0
        for layer in self.layers:
            if isinstance(layer, Conv):
                name = f"Conv_{n_conv}"
                n_conv += 1
                if self.conv_impl == "xla":
                    x = nn.Conv(layer.features, layer.kernel_size, layer.strides, layer.padding, name=name)(x)
                else:
                    method = self.conv_impl.split("_", 1)[1]
                    x = PatchConv(layer.features, layer.kernel_size, layer.strides, layer.padding, method, name=name)(x)
            elif isinstance(layer, Dense):
                x = nn.Dense(layer.features, name=f"Dense_{n_dense}")(x)
                n_dense += 1
            elif isinstance(layer, MaxPool):
                if self.pool_impl == "xla":
                    x = nn.max_pool(x, layer.window, layer.strides, "VALID")
                else:
                    x = max_pool_fast(x, layer.window, layer.strides)
            elif isinstance(layer, Flatten):
                x = x.reshape(x.shape[0], -1)
            elif isinstance(layer, ReLU):
                x = nn.relu(x)
            else:  # pragma: no cover - specs are internal
                raise TypeError(f"unknown layer spec {layer!r}")
        return x


# --------------------------------------------------------------------------
# Building.
# --------------------------------------------------------------------------


def _resolve_split(split, default: tuple[int, ...], num_blocks: int) -> tuple[int, ...]:
    valid = f"integers in 1..{num_blocks - 1}, strictly increasing" if num_blocks > 1 else "[] (one block only)"
    if isinstance(split, str):
        if split == "default":
            return default
        if split == "every":
            return tuple(range(1, num_blocks))
        raise NetworkError(f"split: unknown value {split!r}; allowed: 'default', 'every', or a list of {valid}")
    if not isinstance(split, Sequence) or not all(isinstance(s, int) and not isinstance(s, bool) for s in split):
        raise NetworkError(f"split: {split!r} is not 'default', 'every', or a list of {valid}")
    split = tuple(split)
    bad = [s for s in split if not 1 <= s <= num_blocks - 1]
    if bad:
        raise NetworkError(f"split: value(s) {bad} out of range; allowed: {valid} (network has {num_blocks} blocks)")
    if any(b <= a for a, b in zip(split, split[1:])):
        raise NetworkError(f"split: {list(split)} is not strictly increasing; allowed: {valid}")
    return split


def _segment_layers(blocks, split, split_activation) -> list[tuple[Layer, ...]]:
    bounds = (0, *split, len(blocks))
    segments = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        layers: list[Layer] = []
        for k in range(start, stop):
            layers.extend(blocks[k].layers)
            at_split = k == stop - 1 and stop != len(blocks)
            if blocks[k].act and (not at_split or split_activation == "relu"):
                layers.append(ReLU())
        segments.append(tuple(layers))
    return segments


def _positive_int(key: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise NetworkError(f"{key}: must be a positive integer, got {value!r}")
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
) -> SplitNetwork:
    """Build a named network cut into segments.

    Args:
      name: one of ``NETWORK_NAMES``.
      num_classes: logits size (default 10; 1000 for alexnet).
      input_shape: per-example input shape (default: the network's own).
      split: ``"default"`` (the paper's split), ``"every"`` (after every
        block) or increasing block indices in 1..num_blocks-1 after which
        to split; ``[]`` gives a single segment.
      split_activation: ``"identity"`` (DistProp) or ``"relu"`` (ExtraProp).
      conv_impl: ``"auto"`` (patches on CPU, xla elsewhere), ``"xla"``
        (nn.Conv), ``"patches"`` (= ``"patches_auto"``, the measured best
        im2col per kernel size), or explicitly ``"patches_slices"`` /
        ``"patches_separable"`` / ``"patches_lax"``.
      pool_impl: ``"auto"`` (fast on CPU, xla elsewhere), ``"xla"``
        (nn.max_pool) or ``"fast"`` (reshape / slice max).
      depth, width: mlp only (defaults 4 and 128).

    Example:
        >>> net = build_network("mlp", depth=3, width=64)
        >>> len(net.segments), net.state_shapes
        (4, ((64,), (64,), (64,)))
    """
    if name not in _REGISTRY:
        raise NetworkError(f"name: unknown network {name!r}; allowed: {', '.join(NETWORK_NAMES)}")
    if name != "mlp" and (depth is not None or width is not None):
        raise NetworkError(f"depth/width: only apply to name='mlp', got name={name!r}")
    depth = _positive_int("depth", 4 if depth is None else depth)
    width = _positive_int("width", 128 if width is None else width)
    num_classes = _positive_int("num_classes", _DEFAULT_NUM_CLASSES.get(name, 10) if num_classes is None else num_classes)
    if split_activation not in SPLIT_ACTIVATIONS:
        raise NetworkError(
            f"split_activation: unknown value {split_activation!r}; allowed: {', '.join(SPLIT_ACTIVATIONS)}"
        )
    conv = resolve_conv_impl(conv_impl)
    pool = resolve_pool_impl(pool_impl)

    blocks, default_split = network_blocks(name, num_classes=num_classes, depth=depth, width=width)
    split = _resolve_split(split, default_split, len(blocks))

    default_shape = _REGISTRY[name][1]
    shape = tuple(default_shape if input_shape is None else input_shape)
    if not all(isinstance(d, int) and d >= 1 for d in shape) or (name != "mlp" and len(shape) != 3):
        raise NetworkError(f"input_shape: expected {len(default_shape)} positive ints (H, W, C), got {input_shape!r}")

    segments = tuple(
        Segment(layers, conv, pool) for layers in _segment_layers(blocks, split, split_activation)
    )
    # Shapes by abstract evaluation: costs no FLOPs even for AlexNet@224.
    shapes = [shape]
    for seg in segments:
        try:
            out = jax.eval_shape(
                lambda x, seg=seg: seg.init_with_output(jax.random.key(0), x)[0],
                jax.ShapeDtypeStruct((1, *shapes[-1]), jnp.float32),
            )
        except (TypeError, ValueError) as e:
            raise NetworkError(f"input_shape: {shape} is too small for {name!r} ({e})") from None
        if 0 in out.shape:
            raise NetworkError(f"input_shape: {shape} is too small for {name!r} (a feature map became empty)")
        shapes.append(tuple(out.shape[1:]))
    assert shapes[-1] == (num_classes,), shapes
    return SplitNetwork(name, segments, shape, tuple(shapes[1:-1]), num_classes)


# --------------------------------------------------------------------------
# Pure functions on (net, params).
# --------------------------------------------------------------------------


def init_network(net: SplitNetwork, rng: jax.Array) -> tuple:
    """Initialise every segment; returns a tuple of per-segment param dicts.

    Segment i uses ``fold_in(rng, i)``, so identical stacked segments (mlp
    with split="every") never share weights.

    Example:
        >>> params = init_network(build_network("mlp"), jax.random.key(0))
        >>> len(params)
        5
    """
    shapes = (net.input_shape, *net.state_shapes)
    return tuple(
        _init_segment(seg, jax.random.fold_in(rng, i), shape) for i, (seg, shape) in enumerate(zip(net.segments, shapes))
    )


@partial(jax.jit, static_argnums=(0, 2))
def _init_segment(seg: nn.Module, key: jax.Array, shape: tuple[int, ...]):
    # Jitted: eager init dispatches (and compiles) every op separately, which
    # took seconds per network; under jit the dummy forward pass is dead code.
    return seg.init(key, jnp.zeros((1, *shape), jnp.float32))["params"]


def apply_segment(net: SplitNetwork, params: tuple, index: int, h: jax.Array) -> jax.Array:
    """Apply segment ``index`` to a batch ``h`` of shape (B, *shape).

    Example:
        >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
        >>> apply_segment(net, p, 0, jnp.zeros((2, 28, 28, 1))).shape
        (2, 128)
    """
    if not isinstance(index, int) or not -len(net.segments) <= index < len(net.segments):
        raise NetworkError(f"index: {index!r} out of range; allowed: 0..{len(net.segments) - 1}")
    return _apply(net.segments[index], params[index], h)


@partial(jax.jit, static_argnums=0)
def _apply(seg: nn.Module, params, h):
    # Jitted per (segment, shapes): eager calls run one compiled program
    # instead of dispatching dozens of im2col slices one by one; inside an
    # outer jit/grad this is simply inlined.
    return seg.apply({"params": params}, h)


def segment_output(net: SplitNetwork, params: tuple, x: jax.Array) -> list[jax.Array]:
    """Outputs of every segment when run in sequence from ``x`` (last = logits).

    Example:
        >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
        >>> [o.shape for o in segment_output(net, p, jnp.zeros((2, 28, 28, 1)))]
        [(2, 128), (2, 10)]
    """
    outs = []
    h = x
    for i in range(len(net.segments)):
        h = apply_segment(net, params, i, h)
        outs.append(h)
    return outs


def forward(net: SplitNetwork, params: tuple, x: jax.Array) -> jax.Array:
    """Logits f_L(...f_1(f_0(x))) of shape (B, num_classes).

    Example:
        >>> net = build_network("mnist_cnn"); p = init_network(net, jax.random.key(0))
        >>> forward(net, p, jnp.zeros((2, 28, 28, 1))).shape
        (2, 10)
    """
    return segment_output(net, params, x)[-1]
