"""The fused Threefry hash and its Gaussian draws (``lagrangian_jax/threefry.py``)."""

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lagrangian_jax import threefry

# Random123's known answers for threefry2x32_20: (key, counter) -> output
KNOWN_ANSWERS = [
  ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
  ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
  ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,counter,expected", KNOWN_ANSWERS)
def test_hash_known_answers(key, counter, expected):
  y = threefry.hash2x32(jnp.array(key, jnp.uint32), *(jnp.uint32(c) for c in counter))
  assert tuple(int(v) for v in y) == expected


def test_hash_is_jaxs_threefry_primitive():
  rng = np.random.default_rng(0)
  key = jnp.asarray(rng.integers(0, 2**32, 2, dtype=np.uint64).astype(np.uint32))
  x0, x1 = (
    jnp.asarray(rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)) for _ in range(2)
  )
  ours = jax.jit(threefry.hash2x32)(key, x0, x1)
  theirs = jex.random.threefry2x32_p.bind(key[0], key[1], x0, x1)
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bits_use_both_words_of_each_counter():
  key = jax.random.key(3)
  words = threefry.bits(key, 5, (3, 4))
  index = jnp.arange(6, dtype=jnp.uint32).reshape(3, 2)
  y0, y1 = threefry.hash2x32(jax.random.key_data(key), index, jnp.full((3, 2), 5, jnp.uint32))
  np.testing.assert_array_equal(np.asarray(words), np.concatenate([y0, y1], axis=-1))
  odd = threefry.bits(key, 5, (3, 3))  # the last word of each row dropped
  np.testing.assert_array_equal(np.asarray(odd), np.asarray(words)[:, [0, 1, 2]])


def test_normal_is_a_pure_function_of_key_and_stream():
  key = jax.random.key(0)
  a = threefry.normal(key, 1, (8, 16))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(threefry.normal(key, 1, (8, 16))))
  for other in (threefry.normal(key, 2, (8, 16)), threefry.normal(jax.random.key(1), 1, (8, 16))):
    assert not np.any(np.asarray(other) == np.asarray(a))
  raw = threefry.normal(jax.random.key_data(key), 1, (8, 16))  # raw key data works alike
  np.testing.assert_array_equal(np.asarray(raw), np.asarray(a))


def test_normal_statistics():
  """200k draws: standard normal by Kolmogorov-Smirnov, uncorrelated across streams and
  between neighbouring positions (the two words of one hash)."""
  key = jax.random.key(42)
  z = np.asarray(threefry.normal(key, 0, (400, 500))).ravel()
  assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 0.01
  assert stats.kstest(z, "norm").pvalue > 1e-3
  other = np.asarray(threefry.normal(key, 1, (400, 500))).ravel()
  assert abs(np.corrcoef(z, other)[0, 1]) < 5 / np.sqrt(z.size)
  halves = np.asarray(threefry.normal(key, 0, (400, 500)))  # word 0 and word 1 of a hash
  assert abs(np.corrcoef(halves[:, :250].ravel(), halves[:, 250:].ravel())[0, 1]) < 5e-2 / 4


def test_uniform_range_and_vmap():
  u = threefry.uniform(jax.random.key(0), 0, (1000,), 0.0, 0.5)
  assert float(u.min()) >= 0.0 and float(u.max()) < 0.5
  keys = jax.random.split(jax.random.key(0), 3)
  batched = jax.vmap(lambda k: threefry.normal(k, 7, (4, 6)))(keys)
  np.testing.assert_array_equal(
    np.asarray(batched[1]), np.asarray(threefry.normal(keys[1], 7, (4, 6)))
  )


def test_bad_key_is_one_line():
  with pytest.raises(
    TypeError, match=r"threefry: a threefry key or uint32 \(2,\) data, got int32\(3,\)"
  ):
    threefry.normal(jnp.zeros(3, jnp.int32), 0, (2,))


def test_hash_mixtures_pick_another_class():
  from lagrangian_jax.methods.distprop import terms

  t, partner = terms.mix_draw(jax.random.key(0), 2, 8, 10, num_mixed=5, rng="hash")
  assert t.shape == partner.shape == (8, 10)
  assert float(t[:5].min()) >= 0.0 and float(t[:5].max()) < 0.5 and float(t[:5].max()) > 0.0
  assert not np.asarray(t[5:]).any()  # rows past num_mixed stay on their Gaussian
  assert not (np.asarray(partner) == np.arange(10)[None]).any()
  assert set(np.asarray(partner).ravel()) == set(range(10))
