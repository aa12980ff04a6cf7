"""DistProp's pooled per-step noise (``distprop.noise_draws="pooled"``,
``terms.pooled_draw``): each split's ``eps`` is the step's pool rotated and sign-flipped,
its entries i.i.d. standard normal, two splits uncorrelated; the same draws however they
are called (one split, all splits, ``jit``, ``vmap`` over the split as the stage-parallel
code calls it)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import terms

RNGS = ["hash", "jax"]
S, C, P = 8, 10, 128


def _pool_and_key(rng, seed=0):
  key = jax.random.key(seed)
  return jax.jit(terms.pool_draw, static_argnums=(1, 2, 3, 4))(key, S, C, P, rng), key


def _pooled(ring, key, split, shape, rng):
  return jax.jit(terms.pooled_draw, static_argnums=(3, 4))(ring, key, split, shape, rng)


@pytest.mark.parametrize("rng", RNGS)
def test_each_split_is_a_signed_rotation_of_the_pool(rng):
  ring, key = _pool_and_key(rng)
  pool_np = np.asarray(ring)
  np.testing.assert_array_equal(pool_np[..., :P], pool_np[..., P:])  # the pool twice
  pool_np = pool_np[..., :P]
  for split, n in [(0, P), (3, P), (5, 50)]:  # a smaller split reads a window
    eps = np.asarray(_pooled(ring, key, split, (n,), rng))
    assert eps.shape == (S, C, n)
    matches = [
      o for o in range(P) if np.array_equal(np.abs(eps), np.abs(np.roll(pool_np, -o, -1)[..., :n]))
    ]
    assert len(matches) == 1, matches  # one rotation, the same for every row
    window = np.roll(pool_np, -matches[0], -1)[..., :n]
    flipped = np.mean(np.sign(eps) != np.sign(window))
    assert abs(flipped - 0.5) < 4 * 0.5 / math.sqrt(eps.size)  # fair signs


@pytest.mark.parametrize("rng", RNGS)
def test_signs_are_fair_independent_coins_at_every_bit(rng):
  """On a pool of ones each entry is its sign: every one of a word's 32 bit positions is
  a fair coin and neighbours (which share a word) are uncorrelated."""
  key = jax.random.key(1)
  eps = np.asarray(_pooled(jnp.ones((64, C, 512)), key, 2, (256,), rng))
  assert set(np.unique(eps)) == {-1.0, 1.0}
  positive = (eps > 0).reshape(-1, 32)
  tol = 4 * 0.5 / math.sqrt(positive.shape[0])
  assert np.all(np.abs(positive.mean(0) - 0.5) < tol), positive.mean(0)
  flat = eps.reshape(-1)
  assert abs(np.mean(flat[1:] * flat[:-1])) < 4 / math.sqrt(flat.size)


@pytest.mark.parametrize("rng", RNGS)
def test_a_split_is_standard_normal_and_splits_are_uncorrelated(rng):
  pool, key = _pool_and_key(rng, seed=2)
  eps = [np.asarray(_pooled(pool, key, l, (P,), rng)).ravel() for l in range(4)]
  for e in eps:
    assert stats.kstest(e, "norm").pvalue > 1e-3
  n = eps[0].size
  for a in range(4):
    for b in range(a + 1, 4):
      assert abs(np.corrcoef(eps[a], eps[b])[0, 1]) < 5 / math.sqrt(n)


def test_the_same_draws_however_called(rng="hash"):  # the rngs differ only in _words
  net = networks.build_network("mlp", depth=5, width=12, split="every")
  opts = options.Options(
    "class", "sphere", 1.0, 1.0, 0, "soft", "per_step", 0.1, 0.01, S, 0.0, 1.0, "none", 0.0,
    "own", "auto", noise_rng=rng, noise_draws="pooled",
  )  # fmt: skip
  key = jax.random.key(4)
  every = jax.jit(lambda k: terms.split_noises(opts, net, k))(key)
  pool = terms.noise_pool(opts, net, key)
  assert pool.shape == (S, C, 2 * 12)
  one = jax.jit(lambda k: terms.split_noise(opts, net, k, 3))(key)  # draws its own pool
  np.testing.assert_array_equal(every[3], one)
  shape = net.state_shapes[0]
  mapped = jax.jit(jax.vmap(lambda l: terms.pooled_draw(pool, key, l, shape, rng)))
  for l, eps in enumerate(every):
    np.testing.assert_array_equal(eps, mapped(jnp.arange(5))[l])


def test_auto_pools_per_step_draws_only():
  assert options.resolve_noise_draws("auto", "per_step") == "pooled"
  assert options.resolve_noise_draws("auto", "fixed") == "per_split"
  assert options.resolve_noise_draws("per_split", "per_step") == "per_split"


def test_a_bad_value_is_one_line():
  from configs import deep_mlp_distprop

  config = deep_mlp_distprop.get_config()
  config.distprop.noise_draws = "pool"
  with pytest.raises(errors.ConfigError, match="distprop.noise_draws"):
    options.parse(config)


def test_a_split_larger_than_the_pool_is_refused():
  with pytest.raises(ValueError, match="pool"):
    terms.pooled_draw(jnp.ones((S, C, 8)), jax.random.key(0), 0, (5,))
