r"""Gaussian noise from the Threefry-2x32 hash, written out so that XLA fuses it.

DistProp's per-step noise is ``S x C x H`` normals per split and iteration: 2.6 M at the
deep MLP's depth 64, which ``jax.random.normal`` drew (one core) in 25 ms, as long as
backprop's whole step there. JAX lowers ``threefry2x32`` on CPU as a rolled loop (five
trips of a ``while``, each of its ops dispatched alone) and its partitionable bits hash
one counter pair per 32-bit word. Here the same hash (Salmon et al. 2011, "Parallel
random numbers: as easy as 1, 2, 3": 20 rounds, the rotation constants and key schedule
of JAX's and Random123's ``threefry2x32_20``) is plain ``jnp`` arithmetic that XLA fuses
into loops, and each hash's two output words are two draws: 16.5 ms for the same 2.6 M
(its bits 8 ms, the rest the inverse error function; XLA:CPU computes the two words in
two fusions, so the second word saves the memory traffic, not the rounds):

.. math::
  (y_0, y_1) = \mathrm{threefry}_{k}(i, s), \quad u = \mathrm{float}(y) \in [-1, 1),
  \quad \epsilon = \sqrt2\,\mathrm{erf}^{-1}(u)

for counters ``i = 0..ceil(n/2)-1`` of the stream ``s`` (a split's index, say), with
``u`` made from the top 23 bits as ``jax.random.uniform`` makes it. The draws are a pure
function of ``(key, stream)`` and every counter is hashed independently, so XLA
partitions them like any elementwise op (each device hashes only its rows). Not the same
bits as ``jax.random.normal``: another counter layout (the same hash, checked on
Random123's known answers in the tests).

Example:
  >>> import jax
  >>> eps = normal(jax.random.key(0), 3, (4, 5))
  >>> eps.shape, eps.dtype
  ((4, 5), dtype('float32'))
  >>> bool((eps == normal(jax.random.key(0), 3, (4, 5))).all())
  True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
PARITY = 0x1BD11BDA  # the key schedule's third word is k0 ^ k1 ^ PARITY


def _rotate_left(x, r: int):
  return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def hash2x32(key, x0, x1):
  """Threefry-2x32-20 of the counter pairs ``(x0, x1)`` (uint32 arrays of one shape)
  under ``key`` (uint32 ``(2,)``): twenty rounds of add, rotate, xor, with the key
  injected every four rounds.

  >>> k = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
  >>> y = hash2x32(k, jnp.uint32(0x243F6A88), jnp.uint32(0x85A308D3))
  >>> [hex(int(v)) for v in y]  # Random123's known answer
  ['0xc4923a9c', '0x483df7a0']
  """
  k0, k1 = key[0], key[1]
  ks = (k0, k1, k0 ^ k1 ^ np.uint32(PARITY))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in ROTATIONS[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, r)
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x0, x1


def _key_words(key):
  """A key's two uint32 words: a typed threefry key or its raw data."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  if key.shape != (2,) or key.dtype != jnp.uint32:
    raise TypeError(f"threefry: a threefry key or uint32 (2,) data, got {key.dtype}{key.shape}")
  return key


def bits(key, stream, shape) -> jax.Array:
  """uint32 words of ``shape``: the last axis's two halves are the two words of one hash
  per position (odd sizes drop the last word), the stream ``stream`` in the counter's
  second word."""
  shape = tuple(int(d) for d in shape)
  if not shape:
    return bits(key, stream, (1,))[0]
  half = shape[:-1] + ((shape[-1] + 1) // 2,)
  index = jnp.zeros(half, jnp.uint32)  # the position's row-major index in ``half``
  for axis, stride in enumerate(np.cumprod((1,) + half[::-1])[-2::-1]):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, half, axis) * np.uint32(stride)
  if math.prod(half) >= 2**32:
    raise ValueError(f"threefry.bits: {shape} needs more than 2**32 counters")
  y0, y1 = hash2x32(_key_words(key), index, jnp.full(half, stream, jnp.uint32))
  return jnp.concatenate([y0, y1], axis=-1)[..., : shape[-1]]


def to_uniform(words, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
  """float32 uniforms on ``[minval, maxval)`` from uint32 ``words``' top 23 bits."""
  mantissa = (words >> np.uint32(9)) | np.uint32(0x3F800000)
  u = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0  # [0, 1)
  return jnp.maximum(jnp.float32(minval), u * jnp.float32(maxval - minval) + minval)


def uniform(key, stream, shape, minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
  """float32 uniforms on ``[minval, maxval)`` from :func:`bits`."""
  return to_uniform(bits(key, stream, shape), minval, maxval)


def normal(key, stream, shape) -> jax.Array:
  """Standard normal float32 draws of ``shape`` (the inverse error function of a uniform
  on ``(-1, 1)``, as ``jax.random.normal``)."""
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
  return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(uniform(key, stream, shape, lo, 1.0))
