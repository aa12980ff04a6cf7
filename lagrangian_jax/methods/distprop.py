r"""DistProp: per-class Gaussians replace per-example states (paper Section 3, Algorithm 1).

For every split ``l`` and class ``c`` a Gaussian with mean ``mu_l[c]`` and scale
``sigma_l[c] = softplus(rho_l[c]) + sigma_floor`` (the floor keeps z-scores finite).
Noise ``eps_l`` of shape ``(S, C, *state_shape)`` (derandomisation by reparametrisation)
gives ``S`` synthetic states per class, ``s_l = mu_l + eps_l * sigma_l``, identical at
the extrapolation and the update (``config.distprop.noise``):
  * ``"fixed"``: one snapshot drawn at initialisation (Section 3.1's "fixed snapshot");
    the blocks after a split only ever see those ``S x C`` inputs.
  * ``"per_step"``: ``eps_k`` drawn for every iteration ``k``, as Algorithm 1 has it: a
    pure function of the seed and the step (the same at both half-steps, and on resume).

Constraints (Algorithm 1's dataset projection ``g_0`` and its synthetic-state
constraints for later splits), made epsilon-insensitive with the margin ``m`` (eq. 3):

.. math::
  g_0^{(i)} = \mathrm{shrink}_m\!\left(\frac{f_0(x_i) - \mu_0[y_i]}{\sigma_0[y_i]}\right),
  \qquad
  g_l^{(s,c)} = \mathrm{shrink}_m\!\left(\frac{f_l(s_{l-1}^{(s,c)}) - \mu_l[c]}{\sigma_l[c]}\right)

and the Lagrangian of eq. 1 over these constraints, built with
``formulations.lagrangian`` (or ``augmented_lagrangian`` when ``c_aug > 0``) with
``reduction="batch_mean"``: means over the batch and over the ``S x C`` samples, so
learning rates do not depend on the batch size or the number of classes:

.. math::
  L = \frac{1}{SC}\sum_{s,c} \ell(f_L(s_{L-1}^{(s,c)}), c)
      + \frac1B\sum_i \langle\lambda_0[y_i], g_0^{(i)}\rangle
      + \sum_{l\ge1}\frac{1}{SC}\sum_{s,c}\langle\lambda_l[c], g_l^{(s,c)}\rangle
      \;\left[+\ \tfrac{c_{aug}}{2}\,\text{the same means of } |g|^2\right]

The loss scores the last segment on synthetic samples against their class (softmax over
the logits axis); it never reaches ``f_0``, which learns only through its constraint.

Multipliers (``config.distprop.multipliers``):
  * ``"class"`` (default): ``lambda_0`` is ``(C, *H)``; nothing grows with the data set.
  * ``"example"``: ``lambda_0`` is a per-example table ``(N, *H)`` (the authors' code).
  * ``"l1"``: one multiplier per example for the scalar constraint of the ImageNet
    experiment, ``relu(mean_j |z_j| - m)``. We use the mean absolute *z-score* rather
    than the paper's raw L1 distance so that the margin means the same thing as in the
    element-wise constraint (same feasible set up to the scale of ``m``).

Initialisation (``prototype_init``): ``"sphere"`` (default) draws the means uniformly
on a sphere of radius ``prototype_scale * sqrt(H)`` (``prototype_scale`` is the RMS per
coordinate; the paper's unit sphere is ``1/sqrt(H)``) with ``sigma = sigma_init``, so the
classes are distinguishable from the start; ``"data"`` sets ``mu_0[c]``, ``sigma_0[c]``
to the class mean and standard deviation of ``f_0(x)`` under the initial weights (and
``mu_l, sigma_l`` of later splits to the statistics of ``f_l`` on the initial samples),
i.e. a valid solution. ``sigma`` has its own learning-rate group (``sigma`` =
``aux`` rate x ``sigma_learning_rate_scale``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base

MULTIPLIERS = ("class", "example", "l1")
PROTOTYPE_INITS = ("data", "sphere")
SHRINKAGES = ("soft", "hard")
NOISES = ("fixed", "per_step")


def _softplus_inverse(y):
  y = jnp.maximum(y, 1e-6)
  return y + jnp.log(-jnp.expm1(-y))


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  opts = config.distprop
  need = errors.require
  need(
    opts.multipliers in MULTIPLIERS,
    "distprop.multipliers",
    f"must be one of {list(MULTIPLIERS)}, got {opts.multipliers!r}",
  )
  need(
    opts.prototype_init in PROTOTYPE_INITS,
    "distprop.prototype_init",
    f"must be one of {list(PROTOTYPE_INITS)}, got {opts.prototype_init!r}",
  )
  need(
    opts.shrinkage in SHRINKAGES,
    "distprop.shrinkage",
    f"must be one of {list(SHRINKAGES)}, got {opts.shrinkage!r}",
  )
  for key, low, strict in (
    ("margin", 0, False),
    ("sigma_floor", 0, True),
    ("samples_per_class", 1, False),
    ("augmentation", 0, False),
    ("sigma_learning_rate_scale", 0, False),
  ):
    value = opts[key]
    need(
      value > low if strict else value >= low,
      f"distprop.{key}",
      f"must be {'>' if strict else '>='} {low}, got {value}",
    )
  num_splits = len(net.state_shapes)
  need(num_splits > 0, "network.split", "method 'distprop' needs at least one split")
  num_classes, samples = net.num_classes, int(opts.samples_per_class)
  floor, margin, shrinkage = float(opts.sigma_floor), float(opts.margin), opts.shrinkage
  augmentation = float(opts.augmentation)

  def sigma_of(proto):
    return jax.nn.softplus(proto["rho"]) + floor

  def sample(proto, noise):
    return proto["mu"][None] + noise * sigma_of(proto)[None]  # (S, C, *H)

  def flat(x):
    return x.reshape((-1,) + x.shape[2:])  # (S*C, *H)

  sample_labels = jnp.tile(jnp.arange(num_classes), samples)  # class of each flat row

  def draw_noise(key):
    return tuple(
      jax.random.normal(
        jax.random.fold_in(key, l), (samples, num_classes) + tuple(shape), jnp.float32
      )
      for l, shape in enumerate(net.state_shapes)
    )

  def noise_of(constants, step):
    if opts.noise == "fixed":
      return constants["noise"]
    return draw_noise(jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), step))

  def init(rng, map_train):
    k_w, k_noise, k_proto = jax.random.split(rng, 3)
    weights = networks.init_network(net, k_w)
    if opts.noise == "fixed":
      constants = {"noise": draw_noise(k_noise)}
    else:  # raw key data: checkpoints and the seed axis hold plain arrays
      constants = {"noise_key": jax.random.key_data(k_noise)}
    noise = noise_of(constants, 0)
    protos = []
    for l, shape in enumerate(net.state_shapes):
      if opts.prototype_init == "sphere":
        d = jax.random.normal(jax.random.fold_in(k_proto, l), (num_classes,) + tuple(shape))
        axes = tuple(range(1, d.ndim))
        # prototype_scale is the RMS per coordinate: radius scale * sqrt(H).
        radius = opts.prototype_scale * float(np.sqrt(np.prod(shape)))
        mu = radius * d / jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
        sigma = jnp.full_like(mu, opts.sigma_init)
      else:
        if l == 0:
          feats, labels = map_train(
            lambda x, y: (networks.apply_segment(net, weights, 0, x), y), limit=opts.init_examples
          )
        else:
          prev = {"mu": protos[-1]["mu"], "rho": protos[-1]["rho"]}
          feats = networks.apply_segment(net, weights, l, flat(sample(prev, noise[l - 1])))
          labels = sample_labels
        mu, sigma = _class_statistics(feats, labels, num_classes)
      protos.append(
        {
          "mu": jnp.asarray(mu, jnp.float32),
          "rho": _softplus_inverse(jnp.asarray(sigma, jnp.float32) - floor),
        }
      )
    h0 = tuple(net.state_shapes[0])
    if opts.multipliers == "class":
      lam0 = jnp.zeros((num_classes,) + h0, jnp.float32)
    elif opts.multipliers == "example":
      lam0 = jnp.zeros((num_train,) + h0, jnp.float32)
    else:
      lam0 = jnp.zeros((num_train,), jnp.float32)
    lams = (lam0,) + tuple(
      jnp.zeros((num_classes,) + tuple(s), jnp.float32) for s in net.state_shapes[1:]
    )
    params = {
      "primal": {"weights": weights, "aux": {"prototypes": tuple(protos)}},
      "dual": {"multipliers": lams},
    }
    return params, constants

  def constraints(params, constants, batch):
    w = params["primal"]["weights"]
    protos = params["primal"]["aux"]["prototypes"]
    noise = noise_of(constants, batch.step)
    h0 = networks.apply_segment(net, w, 0, batch.images)
    z0 = (h0 - protos[0]["mu"][batch.labels]) / sigma_of(protos[0])[batch.labels]
    if opts.multipliers == "l1":
      axes = tuple(range(1, z0.ndim))
      g = [jax.nn.relu(jnp.mean(jnp.abs(z0), axis=axes) - margin)]
    else:
      g = [formulations.epsilon_insensitive(z0, margin, shrinkage)]  # eq. 3
    s = [flat(sample(p, e)) for p, e in zip(protos, noise)]
    for l in range(1, num_splits):
      z = (networks.apply_segment(net, w, l, s[l - 1]) - protos[l]["mu"][sample_labels]) / sigma_of(
        protos[l]
      )[sample_labels]
      g.append(formulations.epsilon_insensitive(z, margin, shrinkage))
    return g, s, h0

  def objective(params, constants, batch):
    g, s, _ = constraints(params, constants, batch)
    w = params["primal"]["weights"]
    lams = params["dual"]["multipliers"]
    logits = networks.apply_segment(net, w, num_splits, s[-1])
    loss = base.cross_entropy(logits, sample_labels)
    # each constraint row's multiplier: its class's (or its example's) row
    if opts.multipliers == "class":
      lam0 = lams[0][batch.labels]
    else:  # a per-example table: each row at its example's natural scale
      lam0 = formulations.per_example_rows(lams[0])
    rows = (lam0,) + tuple(lams[l][sample_labels] for l in range(1, num_splits))
    if augmentation > 0:
      value = formulations.augmented_lagrangian(
        loss, tuple(g), rows, penalty=augmentation, reduction="batch_mean"
      )
    else:
      value = formulations.lagrangian(loss, tuple(g), rows, reduction="batch_mean")
    return value, {"loss": loss, "defect": base.split_defects(g)}

  def defects(params, constants, batch):
    g, _, _ = constraints(params, constants, batch)
    return base.split_defects(g)

  def tables(params):
    flags = jax.tree.map(lambda _: False, params)
    if opts.multipliers != "class":
      mults = list(flags["dual"]["multipliers"])
      mults[0] = True
      flags["dual"]["multipliers"] = tuple(mults)
    return flags

  def primal_labels(primal):
    protos = tuple({"mu": "aux", "rho": "sigma"} for _ in primal["aux"]["prototypes"])
    return {"weights": "weights", "aux": {"prototypes": protos}}

  sigma_rate = float(config.learning_rates.aux) * float(opts.sigma_learning_rate_scale)
  return base.Method(
    name="distprop",
    default_solver="extragradient",
    init=init,
    objective=objective,
    tables=tables,
    defects=defects,
    primal_labels=primal_labels,
    group_rates={"sigma": sigma_rate},
  )


def _class_statistics(feats, labels, num_classes: int):
  """Per-class mean and standard deviation (pure jnp, so ``init`` can be traced).

  Classes absent from ``labels`` get the global statistics.
  """
  feats = jnp.asarray(feats, jnp.float32)
  flat = feats.reshape(feats.shape[0], -1)
  onehot = jax.nn.one_hot(jnp.asarray(labels), num_classes, dtype=jnp.float32)  # (N, C)
  counts = onehot.sum(0)[:, None]
  mean = onehot.T @ flat / jnp.maximum(counts, 1.0)
  var = onehot.T @ jnp.square(flat) / jnp.maximum(counts, 1.0) - jnp.square(mean)
  std = jnp.sqrt(jnp.maximum(var, 0.0)) + 1e-3
  g_mean, g_std = flat.mean(0), flat.std(0) + 1e-3
  mean = jnp.where(counts > 0, mean, g_mean)
  std = jnp.where(counts > 1, std, g_std)
  shape = (num_classes,) + feats.shape[1:]
  return mean.reshape(shape), std.reshape(shape)
