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

Depth (``configs/deep_mlp_distprop.py``, ``experiments/depth.py``). A block after the
first is trained only on samples of the Gaussians before it; at test time it sees the
real chain ``f_{l-1}(...f_0(x))``, whose ambiguous digits lie *between* the Gaussians,
where no sample does, so each block moves them somewhere untrained and the error grows
with the number of splits. :func:`make_split_diagnostics` measures that per split (real
activations vs samples: defect, z-score, nearest-prototype accuracy, Fisher ratio, how
often a block changes the real chain's nearest class). Two remedies, both off by default
(the default objective is unchanged, bit for bit):
  * ``mix_fraction = q > 0``: a share ``q`` of each class's ``S`` samples is moved
    ``t ~ U(0, 1/2)`` of the way to another class ``b`` (mean and scale
    ``(1 - t) mu[c] + t mu[b]``, same for sigma; drawn with the noise, so fixed or per
    step like it) and, with ``mix_targets="own"`` (the default), must still land in its
    own class's band (and be classified as ``c`` by the last block): each block learns to
    snap inputs between the Gaussians back to the nearer class. ``"mixed"`` targets the
    same mixture of the next Gaussians (and soft labels), i.e. an affine relay. Costs no
    data and no extra sample: the blocks stay as decoupled as before.
  * ``real_inputs = "forward"``: blocks ``l >= 1`` also map the batch's real activation of
    split ``l - 1`` into its label's band (class multipliers shared with the samples) and
    the last block classifies it. The activations come from a forward pass of the batch
    through every block at the current iterate, detached at each block
    (``stop_gradient``): no backward through blocks, but one sequential forward pass per
    gradient evaluation (backprop's forward FLOPs); it could be a step stale (the previous
    iteration's pass) to pipeline the blocks. Measured on the deep MLP it lowers the real
    defect yet not the error, so the deep config leaves it off.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base

MULTIPLIERS = ("class", "example", "l1")
PROTOTYPE_INITS = ("data", "sphere")
SHRINKAGES = ("soft", "hard")
NOISES = ("fixed", "per_step")
REAL_INPUTS = ("none", "forward")
MIX_TARGETS = ("own", "mixed")
MIX_SALT = 0x6D6978  # folds the interpolation draws' key out of the noise key


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
  real_inputs = opts.get("real_inputs", "none")
  need(
    real_inputs in REAL_INPUTS,
    "distprop.real_inputs",
    f"must be one of {list(REAL_INPUTS)}, got {real_inputs!r}",
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
  mix_fraction = float(opts.get("mix_fraction", 0.0))
  need(
    0 <= mix_fraction <= 1,
    "distprop.mix_fraction",
    f"must be in [0, 1], got {mix_fraction}",
  )
  mix_targets = opts.get("mix_targets", "own")
  need(
    mix_targets in MIX_TARGETS,
    "distprop.mix_targets",
    f"must be one of {list(MIX_TARGETS)}, got {mix_targets!r}",
  )
  num_splits = len(net.state_shapes)
  need(num_splits > 0, "network.split", "method 'distprop' needs at least one split")
  num_classes, samples = net.num_classes, int(opts.samples_per_class)
  floor, margin, shrinkage = float(opts.sigma_floor), float(opts.margin), opts.shrinkage
  augmentation = float(opts.augmentation)

  def sigma_of(proto):
    return scale(proto, floor)

  sample = functools.partial(_sample, floor=floor)

  sample_labels = jnp.tile(jnp.arange(num_classes), samples)  # class of each flat row
  draw_noise, noise_of = _noise_fns(opts, net)
  num_mixed = int(round(mix_fraction * samples))

  def draw_mix(key):
    """Per block ``l = 1..L``: :func:`mix_draw` of each."""
    return tuple(
      mix_draw(key, l, samples, num_classes, num_mixed) for l in range(1, num_splits + 1)
    )

  def mix_of(constants, step):
    if not num_mixed:
      return None
    if opts.noise == "fixed":
      return constants["mix"]
    key = jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), step)
    return draw_mix(jax.random.fold_in(key, MIX_SALT))

  def target_share(t):  # "own": the target stays the own class (the block snaps)
    return jnp.zeros_like(t) if mix_targets == "own" else t

  def init(rng, map_train):
    k_w, k_noise, k_proto = jax.random.split(rng, 3)
    weights = networks.init_network(net, k_w)
    if opts.noise == "fixed":
      constants = {"noise": draw_noise(k_noise)}
    else:  # raw key data: checkpoints and the seed axis hold plain arrays
      constants = {"noise_key": jax.random.key_data(k_noise)}
    if num_mixed and opts.noise == "fixed":
      constants["mix"] = draw_mix(jax.random.fold_in(k_noise, MIX_SALT))
    constants.update(base.dropout_constants(net, rng))
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

  def rng_of(constants, step, l):  # segment l's dropout key at this iteration (or None)
    key = base.dropout_rng(constants, step)
    return None if key is None else jax.random.fold_in(key, l)

  def constraints(params, constants, batch):
    w = params["primal"]["weights"]
    protos = params["primal"]["aux"]["prototypes"]
    noise = noise_of(constants, batch.step)
    h0 = networks.apply_segment(net, w, 0, batch.images, rng_of(constants, batch.step, 0))
    z0 = (h0 - protos[0]["mu"][batch.labels]) / sigma_of(protos[0])[batch.labels]
    if opts.multipliers == "l1":
      axes = tuple(range(1, z0.ndim))
      g = [jax.nn.relu(jnp.mean(jnp.abs(z0), axis=axes) - margin)]
    else:
      g = [formulations.epsilon_insensitive(z0, margin, shrinkage)]  # eq. 3
    mix = mix_of(constants, batch.step)
    if mix is None:
      s = [flat(sample(p, e)) for p, e in zip(protos, noise)]
      for l in range(1, num_splits):
        z = (
          networks.apply_segment(net, w, l, s[l - 1], rng_of(constants, batch.step, l))
          - protos[l]["mu"][sample_labels]
        ) / sigma_of(protos[l])[sample_labels]
        g.append(formulations.epsilon_insensitive(z, margin, shrinkage))
      return g, s, h0
    # mix_fraction > 0: block l's input is split l-1's Gaussian moved a share t of the
    # way to another class, its target the same mixture of split l's Gaussians
    s = []
    for l in range(1, num_splits + 1):
      t, partner = mix[l - 1]
      p = protos[l - 1]
      s.append(mixed(p["mu"], t, partner) + flat(noise[l - 1]) * mixed(sigma_of(p), t, partner))
      if l < num_splits:
        out = networks.apply_segment(net, w, l, s[-1], rng_of(constants, batch.step, l))
        tt = target_share(t)
        z = (out - mixed(protos[l]["mu"], tt, partner)) / mixed(sigma_of(protos[l]), tt, partner)
        g.append(formulations.epsilon_insensitive(z, margin, shrinkage))
    return g, s, h0

  def real_chain(params, constants, batch, h0):
    """``real_inputs="forward"``: block ``l >= 1`` also maps the real activation of split
    ``l - 1`` into its label's band, and the last block classifies it. Each block's input
    is detached (``stop_gradient``): a forward pass of the batch, no backward through
    blocks. Returns the constraints of splits ``1..L-1`` and the real logits."""
    w = params["primal"]["weights"]
    protos = params["primal"]["aux"]["prototypes"]
    h, g = h0, []
    for l in range(1, num_splits + 1):
      h = networks.apply_segment(
        net, w, l, jax.lax.stop_gradient(h), rng_of(constants, batch.step, l)
      )
      if l < num_splits:
        z = (h - protos[l]["mu"][batch.labels]) / sigma_of(protos[l])[batch.labels]
        g.append(formulations.epsilon_insensitive(z, margin, shrinkage))
    return g, h

  def objective(params, constants, batch):
    g, s, h0 = constraints(params, constants, batch)
    w = params["primal"]["weights"]
    lams = params["dual"]["multipliers"]
    logits = networks.apply_segment(
      net, w, num_splits, s[-1], rng_of(constants, batch.step, num_splits)
    )
    mix = mix_of(constants, batch.step)
    if mix is None:
      loss = base.cross_entropy(logits, sample_labels)
    else:  # the mixtures' soft labels
      t, partner = mix[-1]
      targets = mixed(jnp.eye(num_classes, dtype=jnp.float32), target_share(t), partner)
      loss = jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))
    metrics = {}
    # each constraint row's multiplier: its class's (or its example's) row
    if opts.multipliers == "class":
      lam0 = lams[0][batch.labels]
    else:  # a per-example table: each row at its example's natural scale
      lam0 = formulations.per_example_rows(lams[0])
    if mix is None:
      rows = (lam0,) + tuple(lams[l][sample_labels] for l in range(1, num_splits))
    else:  # a mixture's row: the same mixture of its two classes' multipliers
      rows = (lam0,) + tuple(
        mixed(lams[l], target_share(mix[l - 1][0]), mix[l - 1][1]) for l in range(1, num_splits)
      )
    all_g, objective_value = tuple(g), loss
    if real_inputs == "forward":
      g_real, real_logits = real_chain(params, constants, batch, h0)
      real_loss = base.cross_entropy(real_logits, batch.labels)
      objective_value = loss + real_loss
      # the real rows share their class's multiplier with the synthetic rows
      all_g += tuple(g_real)
      rows += tuple(lams[l][batch.labels] for l in range(1, num_splits))
      metrics = {"real_loss": real_loss}
      if g_real:
        metrics["real_defect"] = jnp.mean(base.split_defects(g_real))
    if augmentation > 0:
      value = formulations.augmented_lagrangian(
        objective_value, all_g, rows, penalty=augmentation, reduction="batch_mean"
      )
    else:
      value = formulations.lagrangian(objective_value, all_g, rows, reduction="batch_mean")
    return value, {"loss": loss, "defect": base.split_defects(g), **metrics}

  def defects(params, constants, batch):
    g, _, _ = constraints(params, constants, batch)
    return base.split_defects(g)

  def placement(params, constants):  # lambda_0 is a per-example table unless per class
    where = base.replicated(params, constants)
    if opts.multipliers != "class":
      mults = list(where.params["dual"]["multipliers"])
      mults[0] = base.ROWS
      where.params["dual"]["multipliers"] = tuple(mults)
    return where

  def primal_labels(primal):
    protos = tuple({"mu": "aux", "rho": "sigma"} for _ in primal["aux"]["prototypes"])
    return {"weights": "weights", "aux": {"prototypes": protos}}

  sigma_rate = float(config.learning_rates.aux) * float(opts.sigma_learning_rate_scale)
  return base.Method(
    name="distprop",
    default_solver="extragradient",
    init=init,
    objective=objective,
    placement=placement,
    applies_dropout=True,
    defects=defects,
    primal_labels=primal_labels,
    group_rates={"sigma": sigma_rate},
  )


DIAGNOSTICS = (
  "real_defect",
  "sample_defect",
  "real_rms_z",
  "sample_rms_z",
  "real_prototype_accuracy",
  "sample_prototype_accuracy",
  "real_fisher",
  "sample_fisher",
  "real_agreement",
  "sigma_rms",
  "prototype_distance",
)


def make_split_diagnostics(config, net: networks.SplitNetwork):
  """A jitted ``fn(params, constants, images, labels, step=0) -> dict`` of per-split arrays.

  For one seed's ``params`` (the iterate) and real examples ``(images, labels)``, each entry
  of :data:`DIAGNOSTICS` is a ``(num_splits,)`` array, split ``l`` compared against its
  class Gaussian ``N(mu_l[c], sigma_l[c])``:

  * ``real_*``: the *real* forward activation ``h_l = f_l(...f_0(x))`` of each example,
    scored against its label's Gaussian: what the blocks after ``l`` see at test time.
  * ``sample_*``: block ``l``'s output on its *training inputs*, ``f_l(s_{l-1})`` on the
    synthetic samples of split ``l - 1`` (``S x C`` of them, noise of ``step``), scored
    against their class's Gaussian. Block 0 trains on real data, so at ``l = 0`` these are
    the ``real_*`` figures.
  * ``*_defect``: mean ``|shrink_m(z)|``, DistProp's constraint (margin, shrinkage of the
    config), ``z = (h - mu_l[c]) / sigma_l[c]``; ``*_rms_z``: ``sqrt(mean z^2)`` (1 for a
    sample of the Gaussian itself, ``<= m`` in the band).
  * ``*_prototype_accuracy``: the share of activations whose nearest Gaussian (mean
    squared z-score) is their own class's; ``*_fisher``: between-class over within-class
    sum of squares of the activations (class means of the activations themselves).
  * ``real_agreement``: the share of examples whose nearest Gaussian at split ``l`` is the
    same class as at split ``l - 1`` (1 at split 0): how often block ``l`` changes the
    real chain's decision.
  * ``sigma_rms``: RMS of ``sigma_l``; ``prototype_distance``: mean distance between two
    class means per ``sqrt(H)`` (compare with ``sigma_rms``).

  Also ``real_accuracy`` / ``sample_accuracy``: the last segment's accuracy on the real
  chain and on the last split's synthetic samples (scalars).
  """
  opts = config.distprop
  floor, margin, shrinkage = float(opts.sigma_floor), float(opts.margin), opts.shrinkage
  num_splits, num_classes = len(net.state_shapes), net.num_classes
  _, noise_of = _noise_fns(opts, net)
  sample_labels = jnp.tile(jnp.arange(num_classes), int(opts.samples_per_class))

  def stats(h, labels, proto):
    mu, sigma = proto["mu"], scale(proto, floor)
    h2 = h.reshape(h.shape[0], -1)
    mu2, sigma2 = mu.reshape(num_classes, -1), sigma.reshape(num_classes, -1)
    z = (h2 - mu2[labels]) / sigma2[labels]
    defect = jnp.mean(jnp.abs(formulations.epsilon_insensitive(z, margin, shrinkage)))
    rms_z = jnp.sqrt(jnp.mean(z * z))
    dist = jnp.mean(jnp.square((h2[:, None] - mu2[None]) / sigma2[None]), axis=-1)  # (N, C)
    nearest = jnp.argmin(dist, -1)
    proto_acc = jnp.mean(nearest == labels)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    means = onehot.T @ h2 / jnp.maximum(onehot.sum(0)[:, None], 1.0)
    within = jnp.mean(jnp.sum(jnp.square(h2 - means[labels]), -1))
    between = jnp.mean(jnp.sum(jnp.square(means[labels] - h2.mean(0)), -1))
    return (defect, rms_z, proto_acc, between / jnp.maximum(within, 1e-12)), nearest

  @jax.jit
  def diagnostics(params, constants, images, labels, step=0):
    w = params["primal"]["weights"]
    protos = params["primal"]["aux"]["prototypes"]
    noise = noise_of(constants, step)
    real = networks.segment_output(net, w, images)
    samples = [flat(_sample(p, e, floor)) for p, e in zip(protos, noise)]
    rows = {k: [] for k in DIAGNOSTICS}
    previous = None
    for l in range(num_splits):
      r, nearest = stats(real[l], labels, protos[l])
      if l == 0:
        smp = r
      else:
        out = networks.apply_segment(net, w, l, samples[l - 1])
        smp, _ = stats(out, sample_labels, protos[l])
      agree = 1.0 if previous is None else jnp.mean(nearest == previous)
      rows["real_agreement"].append(jnp.asarray(agree, jnp.float32))
      previous = nearest
      for name, a, b in zip(("defect", "rms_z", "prototype_accuracy", "fisher"), r, smp):
        rows[f"real_{name}"].append(a)
        rows[f"sample_{name}"].append(b)
      sigma = scale(protos[l], floor).reshape(num_classes, -1)
      mu = protos[l]["mu"].reshape(num_classes, -1)
      rows["sigma_rms"].append(jnp.sqrt(jnp.mean(sigma * sigma)))
      d = jnp.sqrt(jnp.sum(jnp.square(mu[:, None] - mu[None]), -1) / mu.shape[1])
      rows["prototype_distance"].append(jnp.sum(d) / (num_classes * (num_classes - 1)))
    out = {k: jnp.stack(v).astype(jnp.float32) for k, v in rows.items()}
    logits = networks.apply_segment(net, w, num_splits, samples[-1])
    out["real_accuracy"] = jnp.mean(jnp.argmax(real[-1], -1) == labels).astype(jnp.float32)
    out["sample_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == sample_labels).astype(jnp.float32)
    return out

  return diagnostics


def split_diagnostics(config, net, params, constants, images, labels, step=0) -> dict:
  """:func:`make_split_diagnostics` for one call: per-split real vs synthetic figures."""
  return make_split_diagnostics(config, net)(params, constants, images, labels, step)


def scale(proto, floor):
  """``softplus(rho) + floor``: the Gaussians' scales."""
  return jax.nn.softplus(proto["rho"]) + floor


def _sample(proto, noise, floor):
  return proto["mu"][None] + noise * scale(proto, floor)[None]  # (S, C, *H)


def mixed(x, t, partner):
  """``(1 - t) x[c] + t x[partner]`` for class-indexed ``x`` of shape ``(C, *H)`` and
  ``t``, ``partner`` of shape ``(S, C)``: ``(S * C, *H)`` rows, class fastest (the order
  of the samples' labels)."""
  tt = t.reshape(t.shape + (1,) * (x.ndim - 1))
  return flat((1 - tt) * x[None] + tt * x[partner])


def flat(x):
  return x.reshape((-1,) + x.shape[2:])  # (S*C, *H)


def mix_draw(key, block, samples: int, num_classes: int, num_mixed: int):
  """Block ``block``'s ``(t, partner)``, each ``(S, C)``: rows ``s < num_mixed``
  interpolate towards class ``partner`` by ``t ~ U(0, 1/2)``, the others have ``t = 0``
  (the class Gaussian). A pure function of ``(key, block)``: every stage of a
  stage-parallel run draws its own blocks' alike."""
  k_t, k_b = jax.random.split(jax.random.fold_in(key, block))
  t = jax.random.uniform(k_t, (samples, num_classes), jnp.float32, 0.0, 0.5)
  t = jnp.where(jnp.arange(samples)[:, None] < num_mixed, t, 0.0)
  shift = jax.random.randint(k_b, (samples, num_classes), 1, max(num_classes, 2))
  return t, (jnp.arange(num_classes)[None] + shift) % num_classes


def noise_draw(key, split, samples: int, num_classes: int, shape) -> jax.Array:
  """Split ``split``'s ``eps``, ``(S, C, *shape)``: a pure function of ``(key, split)``."""
  return jax.random.normal(
    jax.random.fold_in(key, split), (samples, num_classes) + tuple(shape), jnp.float32
  )


def _noise_fns(opts, net: networks.SplitNetwork):
  """``(draw_noise(key), noise_of(constants, step))``: the ``eps_l`` of every split."""
  samples, num_classes = int(opts.samples_per_class), net.num_classes

  def draw_noise(key):
    return tuple(
      noise_draw(key, l, samples, num_classes, shape) for l, shape in enumerate(net.state_shapes)
    )

  def noise_of(constants, step):
    if opts.noise == "fixed":
      return constants["noise"]
    return draw_noise(jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), step))

  return draw_noise, noise_of


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
