"""Convolution and max pooling that are fast to differentiate on CPU.

XLA:CPU differentiates ``lax.conv_general_dilated`` slowly (the input-gradient of a
convolution is another convolution) and ``reduce_window`` max pooling too (its gradient
is a select-and-scatter). The kernels here compute the same functions from slices,
reshapes and one matrix product, whose gradients are pads, adds and matrix products that
XLA:CPU fuses well. ``networks.build_network`` chooses between them and the XLA
originals with two switches:

  conv_impl  "auto" (rows on CPU, xla elsewhere) | "xla" (nn.Conv) | "patches" | "rows"
  pool_impl  "auto" (fast on CPU, xla elsewhere) | "xla" (nn.max_pool) | "fast"

"patches" is the full im2col (``conv2d_patches``), "rows" the row patches of
``conv2d_rows`` (``kh`` instead of ``kh * kw`` copies of the input; strided columns fall
back to "patches"). ``PatchConv`` has ``nn.Conv``'s parameter names, shapes and initialisers, so a parameter
tree moves between formulations unchanged. ``benchmarks/conv_formulations.py`` times the
formulations, including patch extractions that lost and are not offered here.

Example:
  >>> x = jnp.ones((2, 8, 8, 3))
  >>> resolve_conv_impl("auto", "cpu"), resolve_pool_impl("auto", "cpu")
  ('rows', 'fast')
  >>> max_pool_fast(conv2d_patches(x, jnp.ones((3, 3, 3, 4)))).shape
  (2, 3, 3, 4)
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from lagrangian_jax import errors

__all__ = [
  "CONV_IMPLS",
  "POOL_IMPLS",
  "resolve_conv_impl",
  "resolve_pool_impl",
  "conv2d_patches",
  "conv2d_rows",
  "PatchConv",
  "max_pool_fast",
]

CONV_IMPLS = ("auto", "xla", "patches", "rows")
POOL_IMPLS = ("auto", "xla", "fast")

Padding = str | tuple[tuple[int, int], ...]

# Kernels with more taps than this are cut rows-then-columns instead of one slice per
# tap: one slice per tap gave the fastest steps for 3x3 kernels but took 5+ s to compile
# for AlexNet's 11x11, kh + kw slices about 1 s (benchmarks/conv_formulations.py).
_MAX_TAPS_FOR_SLICES = 9


def resolve_conv_impl(conv_impl: str, backend: str | None = None) -> str:
  """Maps ``conv_impl`` to the one that runs on ``backend``: "xla", "patches" or "rows".

  ``backend`` defaults to ``jax.default_backend()``.

  Example:
    >>> resolve_conv_impl("auto", "cpu"), resolve_conv_impl("auto", "gpu")
    ('rows', 'xla')
  """
  if conv_impl not in CONV_IMPLS:
    raise errors.ConfigError(
      f"config.network.conv_impl: unknown value {conv_impl!r}; allowed: {', '.join(CONV_IMPLS)}"
    )
  if conv_impl == "auto":
    return "rows" if (backend or jax.default_backend()) == "cpu" else "xla"
  return conv_impl


def resolve_pool_impl(pool_impl: str, backend: str | None = None) -> str:
  """Maps ``pool_impl`` to the one that runs on ``backend``: "xla" or "fast".

  ``backend`` defaults to ``jax.default_backend()``.

  Example:
    >>> resolve_pool_impl("auto", "cpu"), resolve_pool_impl("auto", "gpu")
    ('fast', 'xla')
  """
  if pool_impl not in POOL_IMPLS:
    # No config key sets pool_impl (configs always get "auto"); name the section.
    raise errors.ConfigError(
      f"config.network: pool_impl {pool_impl!r} is unknown; allowed: {', '.join(POOL_IMPLS)}"
    )
  if pool_impl == "auto":
    return "fast" if (backend or jax.default_backend()) == "cpu" else "xla"
  return pool_impl


def _explicit_padding(padding: Padding, in_hw, kernel_hw, strides) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding.upper()))
  return tuple((int(lo), int(hi)) for lo, hi in padding)


def _im2col_slices(x, kernel_hw, strides, pads):
  """(B,H,W,C) -> (B,Ho,Wo,kh*kw*C) in (kh, kw, C) order, one strided slice per tap."""
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
  """Like ``_im2col_slices`` with kh row slices then kw column slices; (kw, kh, C) order."""
  kh, kw = kernel_hw
  sh, sw = strides
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  b, hp, wp, c = x.shape
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  rows = jnp.concatenate(
    [
      lax.slice(x, (0, i, 0, 0), (b, i + sh * (ho - 1) + 1, wp, c), (1, sh, 1, 1))
      for i in range(kh)
    ],
    axis=-1,
  )
  c2 = kh * c
  return jnp.concatenate(
    [
      lax.slice(rows, (0, 0, j, 0), (b, ho, j + sw * (wo - 1) + 1, c2), (1, 1, sw, 1))
      for j in range(kw)
    ],
    axis=-1,
  )


def conv2d_rows(x, kernel, bias=None, strides=(1, 1), padding: Padding = "VALID"):
  """Convolution from row patches: ``kh`` row slices, one matmul, ``kw`` shifted adds.

  With ``R[b,i,w] = concat_di x[b, sh*i+di, w]`` (``kh * cin`` features, every input
  column ``w``) and ``Z = R @ K2``, ``K2[(di,ci),(dj,co)] = kernel[di,dj,ci,co]``:

    y[b,i,j,co] = sum_dj Z[b, i, j+dj, dj, co]

  the same sum as ``conv2d_patches`` in another order. The patches are ``kh``, not
  ``kh * kw``, copies of the input: on CPU the full im2col's buffers (85 MB for the
  MNIST net's second convolution at batch 128) cost more in memory traffic and page
  faults than the matmul (benchmarks/cpu_conv.py). The matmul runs on all ``W``
  padded columns (``W / Wo`` more FLOPs), so only a column stride of 1 takes this path;
  strided convolutions run ``conv2d_patches``.

  Example:
    >>> y = conv2d_rows(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))
    >>> y.shape, float(y[0, 0, 0, 0])
    ((2, 6, 6, 4), 27.0)
  """
  kh, kw, cin, cout = kernel.shape
  strides = tuple(strides)
  if strides[1] != 1:
    return conv2d_patches(x, kernel, bias, strides, padding)
  pads = _explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  b, hp, wp, c = x.shape
  sh = strides[0]
  ho, wo = (hp - kh) // sh + 1, wp - kw + 1
  rows = jnp.concatenate(
    [
      lax.slice(x, (0, i, 0, 0), (b, i + sh * (ho - 1) + 1, wp, c), (1, sh, 1, 1))
      for i in range(kh)
    ],
    axis=-1,
  )
  k2 = kernel.transpose(0, 2, 1, 3).reshape(kh * cin, kw * cout)
  z = (rows.reshape(b * ho * wp, kh * cin) @ k2).reshape(b, ho, wp, kw, cout)
  y = z[:, :, 0:wo, 0]
  for j in range(1, kw):
    y = y + z[:, :, j : j + wo, j]
  return y if bias is None else y + bias


def conv2d_patches(x, kernel, bias=None, strides=(1, 1), padding: Padding = "VALID"):
  """Convolution as patches @ kernel (im2col then one matmul); equals ``nn.Conv``.

  ``x`` is NHWC, ``kernel`` has nn.Conv's HWIO shape (kh, kw, cin, cout). Kernels of up
  to 3x3 taps take one slice per tap, larger ones rows then columns.

  Example:
    >>> y = conv2d_patches(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))
    >>> y.shape, float(y[0, 0, 0, 0])
    ((2, 6, 6, 4), 27.0)
  """
  kh, kw, cin, cout = kernel.shape
  strides = tuple(strides)
  pads = _explicit_padding(padding, x.shape[1:3], (kh, kw), strides)
  if kh * kw <= _MAX_TAPS_FOR_SLICES:
    patches = _im2col_slices(x, (kh, kw), strides, pads)
    k2 = kernel.reshape(kh * kw * cin, cout)
  else:
    patches = _im2col_separable(x, (kh, kw), strides, pads)
    k2 = kernel.transpose(1, 0, 2, 3).reshape(kw * kh * cin, cout)
  b, ho, wo, k = patches.shape
  # An explicit 2-D matmul maps onto one GEMM call on CPU.
  y = (patches.reshape(b * ho * wo, k) @ k2).reshape(b, ho, wo, cout)
  return y if bias is None else y + bias


class PatchConv(nn.Module):
  """Drop-in ``nn.Conv`` replacement computing ``conv2d_patches`` or ``conv2d_rows``.

  ``formulation``: "patches" (``conv2d_patches``) or "rows" (``conv2d_rows``).

  Parameters are named, shaped and initialised exactly like ``nn.Conv``'s, including
  ``kernel_init`` (default lecun-normal, as ``nn.Conv``'s; ``networks`` passes the one
  ``config.network.init`` names, e.g. he-normal for deep ReLU nets). ``dtype`` and
  ``param_dtype`` mean what they mean to ``nn.Conv``: the parameters are created in
  ``param_dtype`` and the input, kernel and bias cast to ``dtype`` (None: their promoted
  type) before the patches and the matmul, which then run in it.

  Example:
    >>> m = PatchConv(4, (3, 3))
    >>> p = m.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> p["params"]["kernel"].shape, m.apply(p, jnp.ones((1, 8, 8, 3))).shape
    ((3, 3, 3, 4), (1, 6, 6, 4))
    >>> p["params"]["kernel"].dtype, PatchConv(4, (3, 3), dtype=jnp.bfloat16).apply(
    ...     p, jnp.ones((1, 8, 8, 3))).dtype
    (dtype('float32'), dtype(bfloat16))
  """

  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: Padding = "VALID"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  formulation: str = "patches"
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    # nn.Conv's initialisers, so both formulations start from the same weights.
    shape = (kh, kw, x.shape[-1], self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    conv = conv2d_rows if self.formulation == "rows" else conv2d_patches
    return conv(x, kernel, bias, self.strides, self.padding)


def max_pool_fast(x, window=(2, 2), strides=(2, 2)):
  """Max pooling (VALID) without ``reduce_window``; equals ``nn.max_pool``.

  Non-overlapping windows take a reshape + max, overlapping ones (AlexNet's 3/2) the max
  over strided slices: both have elementwise gradients.

  Example:
    >>> max_pool_fast(jnp.arange(16.).reshape(1, 4, 4, 1))[0, :, :, 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
  """
  (wh, ww), (sh, sw) = tuple(window), tuple(strides)
  b, h, w, c = x.shape
  ho, wo = (h - wh) // sh + 1, (w - ww) // sw + 1
  if (wh, ww) == (sh, sw):
    x = x[:, : ho * sh, : wo * sw]  # VALID drops the ragged border; the reshape needs it gone
    return x.reshape(b, ho, sh, wo, sw, c).max(axis=(2, 4))
  out = None
  for i in range(wh):
    for j in range(ww):
      s = lax.slice(
        x, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1)
      )
      out = s if out is None else jnp.maximum(out, s)
  return out
