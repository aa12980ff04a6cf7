"""DistProp with several Gaussians per class (``distprop.components = K``): block 0's
assignment of each real row to its class's most likely Gaussian, the last block's labels
(Gaussian ``j`` is class ``j // K``), the diagnostics by class, and the refusals; and
block 0's own band (``distprop.first_margin``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lagrangian_jax import errors
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import terms
from tests.test_depth import _deep_config
from tests.test_depth import _method


def _opts(**kw):
  base = options.Options(
    "class", "sphere", 1.0, 1.0, 0, "soft", "fixed", 0.1, 0.0, 1, 0.0, 1.0, "none", 0.0, "own",
    "auto",
  )  # fmt: skip
  return base._replace(**kw)


def _proto(mu, sigma):
  sigma = jnp.asarray(sigma, jnp.float32)
  return {"mu": jnp.asarray(mu, jnp.float32), "rho": jnp.log(jnp.expm1(sigma))}


def test_log_likelihoods_are_the_prototype_logits():
  rng = np.random.default_rng(0)
  proto = _proto(rng.normal(size=(6, 3, 2)), rng.uniform(0.5, 2.0, size=(6, 3, 2)))
  h = jnp.asarray(rng.normal(size=(5, 3, 2)), jnp.float32)
  np.testing.assert_allclose(
    terms.log_likelihoods(_opts(), h, proto), terms.prototype_logits(_opts(), h, proto),
    rtol=1e-5, atol=1e-5,
  )  # fmt: skip


def test_each_row_takes_its_own_class_most_likely_gaussian_by_hand():
  # two classes, two Gaussians each, one coordinate: class 0 at 0 (sigma 1) and 4
  # (sigma 1), class 1 at 1 (sigma 1) and 3 (sigma 0.5)
  proto = _proto([[0.0], [4.0], [1.0], [3.0]], [[1.0], [1.0], [1.0], [0.5]])
  opts = _opts(components=2)
  h = jnp.array([[3.5], [1.9], [2.2], [2.2], [-9.0]])
  labels = jnp.array([0, 0, 1, 0, 1])
  # row 1: class 0, -(1.9^2)/2 = -1.805 against -(2.1^2)/2 = -2.205: Gaussian 0
  # row 2: class 1, -(1.2^2)/2 = -0.72 against -(0.8/0.5)^2/2 - log 0.5 = -0.587: Gaussian 3
  # row 3: class 0, -(2.2^2)/2 = -2.42 against -(1.8^2)/2 = -1.62: Gaussian 1
  # row 4: far below both of class 1's, the wide one is likelier: Gaussian 2
  assert [int(j) for j in terms.components_of(opts, h, proto, labels)] == [1, 0, 3, 1, 2]
  # K = 1: the labels themselves
  np.testing.assert_array_equal(terms.components_of(_opts(), h, proto, labels), labels)
  # block 0's constraint is eq. 3 against the chosen Gaussian: row 0 z = (3.5 - 4) / 1
  g = terms.first_constraint(opts, h, proto, terms.components_of(opts, h, proto, labels))
  np.testing.assert_allclose(float(g[0, 0]), -0.5 + 0.1, rtol=1e-6)


def test_last_loss_scores_a_gaussian_as_its_class():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(12, 3)), jnp.float32)
  gaussian_labels = terms.sample_labels(6, 2)  # 3 classes x 2 Gaussians, 2 samples each
  opts = _opts(components=2)
  expected = terms.last_loss(_opts(), logits, gaussian_labels // 2, None)
  np.testing.assert_allclose(terms.last_loss(opts, logits, gaussian_labels, None), expected)
  # mixtures with their own targets (mix_targets="own"): the same one-hot classes
  t = jnp.full((2, 6), 0.3)
  partner = (jnp.arange(6)[None] + 1) % 6 + jnp.zeros((2, 1), int)
  own = terms.last_loss(opts, logits, gaussian_labels, (t, partner))
  np.testing.assert_allclose(own, expected, rtol=1e-6)
  # mixed targets: the mixture of the two Gaussians' classes
  mixed = terms.last_loss(opts._replace(mix_targets="mixed"), logits, gaussian_labels, (t, partner))
  onehots = np.repeat(np.eye(3), 2, axis=0)
  target = 0.7 * onehots[np.tile(np.arange(6), 2)] + 0.3 * onehots[np.asarray(partner).ravel()]
  logp = np.asarray(jax.nn.log_softmax(logits))
  np.testing.assert_allclose(float(mixed), -np.mean(np.sum(target * logp, -1)), rtol=1e-5)


def test_the_objective_runs_k_gaussians_per_class_and_its_gradient_moves_them():
  config = _deep_config(2, **{"distprop.components": 3, "distprop.samples_per_class": 2})
  _, _, method, params, constants, batch = _method(config)
  protos = params["primal"]["aux"]["prototypes"]
  assert all(p["mu"].shape[0] == 30 for p in protos)
  assert all(lam.shape[0] == 30 for lam in params["dual"]["multipliers"])
  (value, metrics), grads = jax.value_and_grad(method.objective, has_aux=True)(
    params, constants, batch
  )
  assert np.isfinite(float(value)) and metrics["defect"].shape == (2,)
  # split 0: only the Gaussians some example of the batch chose get block 0's gradient
  w = params["primal"]["weights"]
  from lagrangian_jax import networks

  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  h0 = networks.apply_segment(net, w, 0, batch.images)
  own = np.asarray(terms.components_of(options.parse(config), h0, protos[0], batch.labels))
  np.testing.assert_array_equal(own // 3, np.asarray(batch.labels))  # of its own class
  chosen = set(own.tolist())
  g_mu0 = np.abs(np.asarray(grads["primal"]["aux"]["prototypes"][0]["mu"])).max(-1)
  g_lam0 = np.abs(np.asarray(grads["dual"]["multipliers"][0])).max(-1)
  for j in range(30):
    # mu_0 also gets block 1's gradient (its samples' input): the multipliers only block 0's
    assert (g_lam0[j] > 0) == (j in chosen), j
  assert g_mu0.min() > 0  # every Gaussian of split 0 feeds block 1's samples
  # the same gradient block by block
  (v2, _), g2 = jax.jit(method.value_and_grad)(params, constants, batch)
  np.testing.assert_allclose(float(v2), float(value), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g2)):
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(a))) + 1e-12)


@pytest.mark.parametrize(
  "overrides, match",
  [
    ({"distprop.components": 0}, r"config.distprop.components: "),
    (
      {"distprop.components": 2, "distprop.real_inputs": "forward"},
      r"config.distprop.components: .*real_inputs=.forward.",
    ),
    (
      {"distprop.components": 2, "distprop.prototype_init": "data"},
      r"config.distprop.components: .*sphere",
    ),
  ],
)
def test_bad_components_name_the_key(overrides, match):
  from lagrangian_jax import state as state_lib

  with pytest.raises(errors.ConfigError, match=match):
    state_lib.build_experiment(_deep_config(2, **overrides))


def test_stage_parallel_refuses_components():
  from lagrangian_jax import state as state_lib
  from tests.test_stage_parallel import deep

  config = deep(layout="stacked")
  config.distprop.components = 2
  with pytest.raises(errors.ConfigError, match="config.distprop.components: .*one Gaussian"):
    state_lib.build_experiment(config)


def test_diagnostics_score_the_nearest_gaussian_by_class():
  from lagrangian_jax import networks
  from lagrangian_jax.methods.distprop import diagnostics

  config = _deep_config(2, **{"distprop.components": 2, "distprop.samples_per_class": 2})
  _, _, method, params, constants, batch = _method(config)
  net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  out = diagnostics.split_diagnostics(config, net, params, constants, batch.images, batch.labels)
  # split 0's nearest-prototype accuracy by hand: the nearest of the 20 Gaussians (mean
  # squared z-score) is of the example's class
  proto = params["primal"]["aux"]["prototypes"][0]
  h = np.asarray(networks.apply_segment(net, params["primal"]["weights"], 0, batch.images))
  mu = np.asarray(proto["mu"])
  sigma = np.asarray(terms.scale(proto, config.distprop.sigma_floor))
  d = np.mean(((h[:, None] - mu[None]) / sigma[None]) ** 2, -1)
  expected = np.mean(np.argmin(d, -1) // 2 == np.asarray(batch.labels))
  np.testing.assert_allclose(float(out["real_prototype_accuracy"][0]), expected, rtol=1e-6)
  assert 0.0 <= float(out["sample_accuracy"]) <= 1.0


def test_local_loss_takes_a_class_as_the_mixture_of_its_gaussians():
  # two classes, two Gaussians each, one coordinate, sigma 1: logits -(h - mu)^2 / 2
  proto = _proto([[0.0], [4.0], [1.0], [3.0]], [[1.0]] * 4)
  h, labels = jnp.array([[2.5]]), jnp.array([1])
  ll = -0.5 * (2.5 - np.array([0.0, 4.0, 1.0, 3.0])) ** 2
  c0, c1 = np.logaddexp(ll[0], ll[1]), np.logaddexp(ll[2], ll[3])
  expected = -(c1 - np.logaddexp(c0, c1))
  opts = _opts(components=2, real_inputs="local")
  np.testing.assert_allclose(float(terms.local_loss(opts, h, proto, labels)), expected, rtol=1e-5)


def test_local_runs_with_k_gaussians_per_class():
  overrides = {"distprop.components": 2, "distprop.samples_per_class": 2}
  config = _deep_config(2, **overrides, **{"distprop.real_inputs": "local"})
  _, _, method, params, constants, batch = _method(config)
  value, metrics = method.objective(params, constants, batch)
  assert np.isfinite(float(value)) and np.isfinite(float(metrics["local_loss"]))
  assert method.value_and_grad is None  # differentiated whole, as with one Gaussian


def test_first_margin_sets_block_zero_band_only():
  proto = _proto([[0.0, 0.0]], [[1.0, 1.0]])
  h, labels = jnp.array([[0.5, -2.0]]), jnp.array([0])
  same = terms.first_constraint(_opts(), h, proto, labels)  # margin 0.1, soft
  np.testing.assert_allclose(np.asarray(same[0]), [0.4, -1.9], rtol=1e-6)
  wide = _opts(first_margin=1.0)
  np.testing.assert_allclose(
    np.asarray(terms.first_constraint(wide, h, proto, labels)[0]), [0.0, -1.0], rtol=1e-6
  )
  # the inner blocks keep the margin
  inner = terms.block_constraint(wide, h, proto, labels, None)
  np.testing.assert_allclose(np.asarray(inner[0]), [0.4, -1.9], rtol=1e-6)
