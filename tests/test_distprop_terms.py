"""DistProp's terms as dense operations (mixing matrices and dots) are the gather
formulation they replaced, to float32 rounding: values and gradients, random inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lagrangian_jax.methods import base
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import terms

S, C = 6, 10
TOL = {"rtol": 1e-6, "atol": 1e-6}


def opts_with(**changes):
  opts = options.Options(
    "class", "sphere", 1.0, 1.0, 0, "soft", "per_step", 0.1, 0.01, S, 0.0, 1.0, "none", 0.5,
    "own", "auto",
  )  # fmt: skip
  return opts._replace(**changes)


# the formulation before issue 21: gathers x[labels], x[partner]


def gather_mixed(x, t, partner):
  tt = t.reshape(t.shape + (1,) * (x.ndim - 1))
  return terms.flat((1 - tt) * x[None] + tt * x[partner])


def gather_target_rows(opts, x, labels, mix):
  if mix is None:
    return x[labels]
  t, partner = mix
  return gather_mixed(x, jnp.zeros_like(t) if opts.own_targets else t, partner)


def gather_block_input(opts, proto, eps, mix):
  if mix is None:
    return terms.flat(terms.sample(proto, eps, opts.sigma_floor))
  t, partner = mix
  sigma = terms.scale(proto, opts.sigma_floor)
  return gather_mixed(proto["mu"], t, partner) + terms.flat(eps) * gather_mixed(sigma, t, partner)


def gather_last_loss(opts, logits, labels, mix):
  if mix is None:
    return base.cross_entropy(logits, labels)
  targets = gather_target_rows(opts, jnp.eye(logits.shape[-1]), labels, mix)
  return jnp.mean(optax.softmax_cross_entropy(logits, targets))


def gather_first(opts, h0, proto, lam0, labels):
  sigma = terms.scale(proto, opts.sigma_floor)
  g = terms.constraint(opts, terms.z_score(h0, proto["mu"][labels], sigma[labels]))
  return g, lam0[labels]


def draws(shape, seed=0):
  keys = jax.random.split(jax.random.key(seed), 5)
  proto = {
    "mu": jax.random.normal(keys[0], (C,) + shape),
    "rho": jax.random.normal(keys[1], (C,) + shape),
  }
  eps = jax.random.normal(keys[2], (S, C) + shape)
  mix = terms.mix_draw(keys[3], 1, S, C, num_mixed=S // 2)
  return proto, eps, mix, keys[4]


SHAPES = [(7,), (3, 3, 2)]
MIX_TARGETS = ["own", "mixed"]


@pytest.mark.parametrize("shape", SHAPES)
def test_mixed_is_the_gather(shape):
  proto, _, (t, partner), _ = draws(shape)
  x = proto["mu"]
  np.testing.assert_allclose(terms.mixed(x, t, partner), gather_mixed(x, t, partner), **TOL)
  ct = jax.random.normal(jax.random.key(9), (S * C,) + shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x, t, partner) * ct))(x)
  np.testing.assert_allclose(grad(terms.mixed), grad(gather_mixed), **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_mix", [False, True])
def test_block_input_is_the_gather(shape, with_mix):
  opts = opts_with()
  proto, eps, mix, _ = draws(shape)
  mix = mix if with_mix else None
  new = lambda p: terms.block_input(opts, p, eps, mix)
  old = lambda p: gather_block_input(opts, p, eps, mix)
  np.testing.assert_allclose(new(proto), old(proto), **TOL)
  ct = jax.random.normal(jax.random.key(9), (S * C,) + shape)
  grad = lambda f: jax.grad(lambda p: jnp.sum(f(p) * ct))(proto)
  for leaf_new, leaf_old in zip(jax.tree.leaves(grad(new)), jax.tree.leaves(grad(old))):
    np.testing.assert_allclose(leaf_new, leaf_old, **TOL)


@pytest.mark.parametrize("mix_targets", MIX_TARGETS)
@pytest.mark.parametrize("with_mix", [False, True])
def test_target_rows_and_block_terms_are_the_gather(mix_targets, with_mix):
  opts = opts_with(mix_targets=mix_targets)
  shape = (3, 3, 2)
  proto, eps, mix, key = draws(shape, seed=1)
  mix = mix if with_mix else None
  labels = terms.sample_labels(C, S)
  lam = jax.random.normal(key, (C,) + shape)
  np.testing.assert_allclose(
    terms.target_rows(opts, lam, labels, mix), gather_target_rows(opts, lam, labels, mix), **TOL
  )
  out = jax.random.normal(jax.random.fold_in(key, 1), (S * C,) + shape)

  def terms_of(rows_fn, p, lam):
    mu, sigma = (
      rows_fn(opts, p["mu"], labels, mix),
      rows_fn(opts, terms.scale(p, opts.sigma_floor), labels, mix),
    )
    g = terms.constraint(opts, terms.z_score(out, mu, sigma))
    return jnp.sum(g * rows_fn(opts, lam, labels, mix))

  new = jax.value_and_grad(lambda p, lam: terms_of(terms.target_rows, p, lam), (0, 1))
  old = jax.value_and_grad(lambda p, lam: terms_of(gather_target_rows, p, lam), (0, 1))
  np.testing.assert_allclose(
    terms.block_constraint(opts, out, proto, labels, mix),
    terms.constraint(
      opts,
      terms.z_score(
        out,
        gather_target_rows(opts, proto["mu"], labels, mix),
        gather_target_rows(opts, terms.scale(proto, opts.sigma_floor), labels, mix),
      ),
    ),
    **TOL,
  )
  for a, b in zip(jax.tree.leaves(new(proto, lam)), jax.tree.leaves(old(proto, lam))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # sums of S * C rows


@pytest.mark.parametrize("mix_targets", MIX_TARGETS)
@pytest.mark.parametrize("with_mix", [False, True])
def test_last_loss_is_the_gather(mix_targets, with_mix):
  opts = opts_with(mix_targets=mix_targets)
  _, _, mix, key = draws((4,), seed=2)
  mix = mix if with_mix else None
  logits = 3 * jax.random.normal(key, (S * C, C))
  labels = terms.sample_labels(C, S)
  new = jax.value_and_grad(lambda z: terms.last_loss(opts, z, labels, mix))(logits)
  old = jax.value_and_grad(lambda z: gather_last_loss(opts, z, labels, mix))(logits)
  for a, b in zip(new, old):
    np.testing.assert_allclose(a, b, **TOL)


def test_first_block_terms_are_the_gather():
  opts = opts_with()
  proto, _, _, key = draws((5,), seed=3)
  labels = jax.random.randint(key, (16,), 0, C)
  h0 = jax.random.normal(jax.random.fold_in(key, 1), (16, 5))
  lam0 = jax.random.normal(jax.random.fold_in(key, 2), (C, 5))
  new = terms.first_constraint(opts, h0, proto, labels), terms.first_rows(opts, lam0, labels)
  for a, b in zip(new, gather_first(opts, h0, proto, lam0, labels)):
    np.testing.assert_allclose(a, b, **TOL)
  value = lambda f: jax.grad(lambda p, lam: jnp.sum(f(p, lam)[0] * f(p, lam)[1]), (0, 1))
  new_grad = value(
    lambda p, lam: (
      terms.first_constraint(opts, h0, p, labels),
      terms.first_rows(opts, lam, labels),
    )
  )(proto, lam0)
  old_grad = value(lambda p, lam: gather_first(opts, h0, p, lam, labels))(proto, lam0)
  for a, b in zip(jax.tree.leaves(new_grad), jax.tree.leaves(old_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # sums over the batch's rows


def test_class_rows_picks_exactly():
  x = jax.random.normal(jax.random.key(0), (C, 3, 2)) * 1e3
  labels = jnp.array([9, 0, 3, 3, 1])
  np.testing.assert_array_equal(terms.class_rows(x, labels), x[labels])


@pytest.mark.parametrize("jit", [False, True])
def test_block_mixes_are_the_per_block_draws(jit):
  """The batched draw (one ``vmap`` over the blocks) gives each block's own draw, bit
  for bit: the mixtures are the same function of the seed and the step as before."""
  from lagrangian_jax import networks

  net = networks.build_network("mlp", depth=6, width=8, split="every")
  opts = opts_with(mix_fraction=0.5)
  key = jax.random.key(3)
  draw = lambda k: terms.block_mixes(opts, net, k)  # noqa: E731
  mixes = (jax.jit(draw) if jit else draw)(key)
  assert len(mixes) == len(net.state_shapes)
  for l, (t, partner) in enumerate(mixes, start=1):
    t0, p0 = terms.mix_draw(key, l, S, C, opts.num_mixed)
    np.testing.assert_array_equal(t, t0)
    np.testing.assert_array_equal(partner, p0)
