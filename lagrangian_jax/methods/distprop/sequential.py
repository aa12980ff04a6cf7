"""Sequential DistProp: Algorithm 1's objective as the sum of the blocks' terms.

Every block's term (``terms.py``) is evaluated in one program, one block after another:
block 0 on the batch, each inner block on the samples of the Gaussians before it, the
last block's loss; their constraints and multiplier rows go into one Lagrangian
(``terms.lagrangian``), the value Algorithm 1 differentiates at its extrapolation and
update. ``real_inputs="forward"`` adds the real chain's terms (package docstring).

Example:
  >>> import jax
  >>> from configs import default
  >>> from lagrangian_jax import networks
  >>> config = default.get_config(); config.network.name = "mlp"
  >>> config.network.depth, config.network.width, config.network.split = 2, 16, "every"
  >>> net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
  >>> method = make(config, net, num_train=100)
  >>> params, constants = method.init(jax.random.key(0), None)
  >>> [p["mu"].shape for p in params["primal"]["aux"]["prototypes"]]  # (C, H) per split
  [(10, 16), (10, 16)]
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base
from lagrangian_jax.methods.distprop import options
from lagrangian_jax.methods.distprop import terms


class Setup(NamedTuple):
  """What the objective reads besides its arguments."""

  opts: options.Options
  net: networks.SplitNetwork
  sample_labels: jax.Array  # the class of each flat sample row
  # the flat sample rows' sharding: split over the mesh's ``data`` axis (:func:`on_data`)
  rows: jax.sharding.NamedSharding | None = None


def setup_of(config, net: networks.SplitNetwork) -> Setup:
  """The objective's :class:`Setup` for ``net`` and ``config.distprop`` (one device)."""
  opts = options.parse(config)
  errors.require(
    len(net.state_shapes) > 0, "network.split", "method 'distprop' needs at least one split"
  )
  errors.require(
    opts.components == 1 or opts.real_inputs != "forward",
    "distprop.components",
    f"{opts.components} Gaussians per class do not run with real_inputs='forward' (its "
    "real rows' targets are their class's one Gaussian)",
  )
  errors.require(
    opts.components == 1 or opts.prototype_init == "sphere",
    "distprop.components",
    f"{opts.components} Gaussians per class start on the sphere only "
    f"(prototype_init='sphere', got {opts.prototype_init!r}): class statistics give one",
  )
  errors.require(
    opts.local_head == "prototypes" or opts.real_inputs == "local",
    "distprop.local_head",
    f"{opts.local_head!r} is the read-out of the local losses: it needs "
    f"real_inputs='local', got {opts.real_inputs!r}",
  )
  net = terms.gaussians(opts, net)
  return Setup(opts, net, terms.sample_labels(net.num_classes, opts.samples_per_class))


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  """DistProp's method (``base.Method``) for ``net`` and ``config.distprop``."""
  setup = setup_of(config, net)
  opts = setup.opts
  sigma_rate = float(config.learning_rates.aux) * opts.sigma_learning_rate_scale
  return base.Method(
    name="distprop",
    default_solver="extragradient",
    init=functools.partial(init, setup, num_train),
    objective=functools.partial(objective, setup),
    placement=functools.partial(placement, opts),
    applies_dropout=True,
    defects=functools.partial(defects, setup),
    primal_labels=primal_labels,
    group_rates={"sigma": sigma_rate},
    value_and_grad=_value_and_grad_of(setup),
  )


# ----------------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------------


def init(setup: Setup, num_train: int, rng, map_train):
  """``(params, constants)``: the network, the Gaussians (``prototype_init``), zero
  multipliers and the draws' constants."""
  opts, net = setup.opts, setup.net
  k_w, k_noise, k_proto = jax.random.split(rng, 3)
  weights = networks.init_network(net, k_w)
  constants = terms.initial_draws(opts, net, k_noise)
  constants.update(base.dropout_constants(net, rng))
  noise = terms.noise_of(opts, net, constants, 0)
  protos = []
  for l, shape in enumerate(net.state_shapes):
    if opts.prototype_init == "sphere":
      mu, sigma = _sphere(opts, net.num_classes, shape, jax.random.fold_in(k_proto, l))
    else:
      mu, sigma = _data_statistics(setup, weights, protos, noise, l, map_train)
    protos.append(
      {
        "mu": jnp.asarray(mu, jnp.float32),
        "rho": _softplus_inverse(jnp.asarray(sigma, jnp.float32) - opts.sigma_floor),
      }
    )
  aux = {"prototypes": tuple(protos)}
  if _has_heads(opts):
    aux["heads"] = tuple(
      {
        "kernel": jnp.zeros((int(np.prod(shape)), net.num_classes), jnp.float32),
        "bias": jnp.zeros((net.num_classes,), jnp.float32),
      }
      for shape in net.state_shapes
    )
  params = {
    "primal": {"weights": weights, "aux": aux},
    "dual": {"multipliers": _zero_multipliers(opts, net, num_train)},
  }
  return params, constants


def _has_heads(opts: options.Options) -> bool:
  """Each split has a linear read-out (``local_head="linear"``, ``terms.local_loss``)."""
  return opts.real_inputs == "local" and opts.local_head == "linear"


def _sphere(opts: options.Options, num_classes: int, shape, key):
  """``prototype_init="sphere"``: means uniform on the sphere of radius
  ``prototype_scale * sqrt(H)``, scales ``sigma_init``."""
  d = jax.random.normal(key, (num_classes,) + tuple(shape))
  axes = tuple(range(1, d.ndim))
  # prototype_scale is the RMS per coordinate: radius scale * sqrt(H).
  radius = opts.prototype_scale * float(np.sqrt(np.prod(shape)))
  mu = radius * d / jnp.sqrt(jnp.sum(d * d, axis=axes, keepdims=True))
  return mu, jnp.full_like(mu, opts.sigma_init)


def _data_statistics(setup: Setup, weights, protos, noise, l: int, map_train):
  """``prototype_init="data"``: split ``l``'s class statistics of ``f_0(x)`` on the
  training set (``l = 0``), of ``f_l`` on the samples of the split before (``l > 0``)."""
  opts, net = setup.opts, setup.net
  if l == 0:
    feats, labels = map_train(
      lambda x, y: (networks.apply_segment(net, weights, 0, x), y), limit=opts.init_examples
    )
  else:
    prev = {"mu": protos[-1]["mu"], "rho": protos[-1]["rho"]}
    inputs = terms.flat(terms.sample(prev, noise[l - 1], opts.sigma_floor))
    feats = networks.apply_segment(net, weights, l, inputs)
    labels = setup.sample_labels
  return _class_statistics(feats, labels, net.num_classes)


def _zero_multipliers(opts: options.Options, net, num_train: int) -> tuple:
  """``lambda_0``: ``(C, *H)`` (``"class"``), ``(N, *H)`` (``"example"``) or ``(N,)``
  (``"l1"``); later splits ``(C, *H)``."""
  h0 = tuple(net.state_shapes[0])
  if opts.multipliers == "class":
    lam0 = jnp.zeros((net.num_classes,) + h0, jnp.float32)
  elif opts.multipliers == "example":
    lam0 = jnp.zeros((num_train,) + h0, jnp.float32)
  else:
    lam0 = jnp.zeros((num_train,), jnp.float32)
  return (lam0,) + tuple(
    jnp.zeros((net.num_classes,) + tuple(s), jnp.float32) for s in net.state_shapes[1:]
  )


def _softplus_inverse(y):
  y = jnp.maximum(y, 1e-6)
  return y + jnp.log(-jnp.expm1(-y))


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


# ----------------------------------------------------------------------------------
# The synthetic rows on the data axis
# ----------------------------------------------------------------------------------


def on_data(config, net: networks.SplitNetwork, method: base.Method, mesh) -> base.Method:
  """``method`` (from :func:`make` with ``config`` and ``net``) with its synthetic rows
  split over ``mesh``'s ``data`` axis; itself on one data device (or ``mesh=None``).

  The objective is a mean over the batch's rows and over the ``S x C`` sample rows. The
  batch is split over ``data`` by its sharding; the samples are drawn inside the step, so
  without a constraint every data device would draw and run all of them through every
  block. :func:`spread` constrains the draws and each block's input rows to be split
  over ``data``: XLA's SPMD partitioner then gives each device its share of every
  block's rows (and of the noise: ``jax_threefry_partitionable``, JAX's default, draws
  each element from its own counter, so a device draws only its rows, the same numbers
  as one device draws) and all-reduces the weights' and prototypes' gradients. The
  function is unchanged: only the rounding of the sums over rows moves. ``S x C`` rows
  that ``data`` does not divide are padded by the partitioner (the last devices get
  fewer real rows).

  Example (one device: the method itself):
    >>> import jax
    >>> from configs import deep_mlp_distprop
    >>> from lagrangian_jax import networks
    >>> config = deep_mlp_distprop.get_config(); config.network.depth = 2
    >>> net = networks.from_config(config.network, num_classes=10, input_shape=(28, 28, 1))
    >>> method = make(config, net, num_train=100)
    >>> on_data(config, net, method, jax.make_mesh((1, 1), ("data", "stage"))) is method
    True
  """
  if mesh is None or mesh.shape["data"] == 1:
    return method
  setup = setup_of(config, net)._replace(rows=jax.NamedSharding(mesh, jax.P("data")))
  return method._replace(
    objective=functools.partial(objective, setup), value_and_grad=_value_and_grad_of(setup)
  )


def spread(setup: Setup, x, lead: int = 1):
  """``x`` with its leading ``lead`` sample axes (``(S * C,)`` rows, or ``(S, C)``) split
  over ``data`` (:func:`on_data`); ``x`` itself without a mesh."""
  if setup.rows is None:
    return x
  rows = x.reshape((-1,) + x.shape[lead:])
  return jax.lax.with_sharding_constraint(rows, setup.rows).reshape(x.shape)


def _spread_draws(setup: Setup, noise, mix):
  """The noise ``(S, C, *H)`` and the mixtures ``(t, partner)``, ``(S, C)`` each, split
  over ``data`` as the rows they make."""
  noise = tuple(spread(setup, e, 2) for e in noise)
  if mix is not None:
    mix = tuple(tuple(spread(setup, x, 2) for x in m) for m in mix)
  return noise, mix


# ----------------------------------------------------------------------------------
# The objective (Algorithm 1)
# ----------------------------------------------------------------------------------


def _apply(setup: Setup, weights, constants, step, l: int, h):
  """Segment ``l`` with its dropout key at this iteration (``None`` without dropout)."""
  key = base.dropout_rng(constants, step)
  rng = None if key is None else jax.random.fold_in(key, l)
  return networks.apply_segment(setup.net, weights, l, h, rng)


def constraints(setup: Setup, params, constants, batch):
  """``(g, s, h0, labels0)``: the constraints of splits ``0..K-1`` (block 0 on the batch,
  block ``l`` on its input samples), the input samples ``s`` of blocks ``1..K``, block 0's
  output on the batch and its rows' Gaussians (:func:`_first_labels`)."""
  opts, k = setup.opts, len(setup.net.state_shapes)
  w = params["primal"]["weights"]
  protos = params["primal"]["aux"]["prototypes"]
  noise = terms.noise_of(opts, setup.net, constants, batch.step)
  h0 = _apply(setup, w, constants, batch.step, 0, batch.images)
  labels0 = _first_labels(setup, h0, protos[0], batch)
  g = [terms.first_constraint(opts, h0, protos[0], labels0)]
  mix = terms.mix_of(opts, setup.net, constants, batch.step)
  noise, mix = _spread_draws(setup, noise, mix)
  # the op order is part of the numerics (XLA's fusions, hence the gradient's rounding,
  # follow it): without mixtures every sample is drawn first, with them block by block
  s = (
    []
    if mix is not None
    else [spread(setup, terms.block_input(opts, p, e, None)) for p, e in zip(protos, noise)]
  )
  for l in range(1, k + 1):
    mix_l = None if mix is None else mix[l - 1]
    if mix is not None:
      s.append(spread(setup, terms.block_input(opts, protos[l - 1], noise[l - 1], mix_l)))
    if l < k:
      out = _apply(setup, w, constants, batch.step, l, s[l - 1])
      g.append(terms.block_constraint(opts, out, protos[l], setup.sample_labels, mix_l))
  return g, s, h0, labels0


def _first_labels(setup: Setup, h0, proto, batch):
  """Block 0's rows' Gaussians: the batch's labels, or with ``components > 1`` each
  example's most likely Gaussian of its class (``terms.components_of``)."""
  return terms.components_of(setup.opts, h0, proto, batch.labels)


def real_activations(setup: Setup, params, constants, batch, h0):
  """The real chain from ``h0`` (block 0's output on the batch): ``([h_1 .. h_{K-1}],
  logits)``, ``h_l = f_l(stop_gradient(h_{l-1}))``. Each block's input is detached: a
  forward pass of the batch, no backward through blocks (no gradient crosses a split)."""
  k = len(setup.net.state_shapes)
  h, hs = h0, []
  for l in range(1, k + 1):
    h = _apply(
      setup, params["primal"]["weights"], constants, batch.step, l, jax.lax.stop_gradient(h)
    )
    if l < k:
      hs.append(h)
  return hs, h


def real_chain(setup: Setup, params, constants, batch, h0):
  """``real_inputs="forward"``: block ``l >= 1`` also maps the real activation of split
  ``l - 1`` into its label's band, and the last block classifies it
  (:func:`real_activations`). Returns the constraints of splits ``1..L-1`` and the real
  logits."""
  protos = params["primal"]["aux"]["prototypes"]
  hs, logits = real_activations(setup, params, constants, batch, h0)
  g = [
    terms.block_constraint(setup.opts, h, protos[l], batch.labels, None)
    for l, h in enumerate(hs, 1)
  ]
  return g, logits


def local_losses(setup: Setup, params, constants, batch, h0):
  """``real_inputs="local"``: ``(per-split local losses (K,), the last block's loss on the
  real chain)``. Split ``l``'s loss (``terms.local_loss``) classifies the real activation
  ``h_l`` by split ``l``'s Gaussians: block 0's on the batch, block ``l``'s on the
  detached ``h_{l-1}`` (:func:`real_activations`), so it reaches block ``l``'s weights and
  split ``l``'s Gaussians only."""
  protos = params["primal"]["aux"]["prototypes"]
  heads = params["primal"]["aux"].get("heads", (None,) * len(protos))
  hs, logits = real_activations(setup, params, constants, batch, h0)
  local = [
    terms.local_loss(setup.opts, h, protos[l], batch.labels, heads[l])
    for l, h in enumerate([h0] + hs)
  ]
  return jnp.stack(local), base.cross_entropy(logits, batch.labels)


def local_ramp(opts: options.Options, step):
  """The real terms' factor at iteration ``step`` (``S = local_start``, ``W =
  local_warmup``): 0 for the first ``S`` steps, then up linearly to 1 over ``W`` steps,
  ``clip((step + 1 - S) / W, 0, 1)`` (a step at ``S`` when ``W = 0``; 1 when both are 0).
  Adagrad's first steps move every weight by about its rate; the real chain compounds
  those moves over the blocks and blows up for a while (package docstring), and its
  gradients then fill Adagrad's accumulators (at depth 64 the objective passes the
  divergence threshold); the blocks first settle on the samples alone."""
  if opts.local_warmup <= 0 and opts.local_start <= 0:
    return 1.0
  done = jnp.asarray(step, jnp.float32) + 1.0 - opts.local_start
  if opts.local_warmup <= 0:
    return (done > 0).astype(jnp.float32)
  return jnp.clip(done / opts.local_warmup, 0.0, 1.0)


def _real_terms(setup: Setup, params, constants, batch, h0):
  """``(value, constraints, multiplier rows, metrics)`` that ``real_inputs`` adds."""
  opts, k = setup.opts, len(setup.net.state_shapes)
  lams = params["dual"]["multipliers"]
  if opts.real_inputs == "local":
    local, real_loss = local_losses(setup, params, constants, batch, h0)
    value = local_ramp(opts, batch.step) * (real_loss + opts.local_weight * jnp.sum(local))
    return value, (), (), {"real_loss": real_loss, "local_loss": jnp.mean(local)}
  g_real, real_logits = real_chain(setup, params, constants, batch, h0)
  real_loss = base.cross_entropy(real_logits, batch.labels)
  # the real rows share their class's multiplier with the synthetic rows
  rows = tuple(terms.block_rows(opts, lams[l], batch.labels, None) for l in range(1, k))
  metrics = {"real_loss": real_loss}
  if g_real:
    metrics["real_defect"] = jnp.mean(base.split_defects(g_real))
  return real_loss, tuple(g_real), rows, metrics


def objective(setup: Setup, params, constants, batch):
  """DistProp's Lagrangian on ``batch`` (package docstring) and its metrics."""
  opts, k = setup.opts, len(setup.net.state_shapes)
  g, s, h0, labels0 = constraints(setup, params, constants, batch)
  lams = params["dual"]["multipliers"]
  logits = _apply(setup, params["primal"]["weights"], constants, batch.step, k, s[-1])
  _, mix = _spread_draws(setup, (), terms.mix_of(opts, setup.net, constants, batch.step))
  loss = terms.last_loss(opts, logits, setup.sample_labels, None if mix is None else mix[-1])
  rows = (terms.first_rows(opts, lams[0], labels0),) + tuple(
    terms.block_rows(opts, lams[l], setup.sample_labels, None if mix is None else mix[l - 1])
    for l in range(1, k)
  )
  all_g, value, metrics = tuple(g), loss, {}
  if opts.real_inputs != "none":
    real_value, g_real, real_rows, metrics = _real_terms(setup, params, constants, batch, h0)
    value = loss + real_value
    all_g += g_real
    rows += real_rows
  value = terms.lagrangian(opts, value, all_g, rows)
  return value, {"loss": loss, "defect": base.split_defects(g), **metrics}


def defects(setup: Setup, params, constants, batch):
  """Each split's mean absolute defect on ``batch``."""
  g, _, _, _ = constraints(setup, params, constants, batch)
  return base.split_defects(g)


def placement(opts: options.Options, params, constants) -> base.Placement:
  """Every leaf replicated but ``lambda_0`` unless per class: a per-example table."""
  where = base.replicated(params, constants)
  if opts.multipliers != "class":
    mults = list(where.params["dual"]["multipliers"])
    mults[0] = base.ROWS
    where.params["dual"]["multipliers"] = tuple(mults)
  return where


def primal_labels(primal):
  """Learning-rate groups: ``weights`` (and the splits' linear read-outs, if any), ``aux``
  (the means) and ``sigma`` (``rho``)."""
  aux = {"prototypes": tuple({"mu": "aux", "rho": "sigma"} for _ in primal["aux"]["prototypes"])}
  if "heads" in primal["aux"]:
    aux["heads"] = jax.tree.map(lambda _: "weights", primal["aux"]["heads"])
  return {"weights": "weights", "aux": aux}


# ----------------------------------------------------------------------------------
# The gradient block by block
# ----------------------------------------------------------------------------------


def _block_terms(setup: Setup, constants, batch, eps, mix, l: int):
  """Block ``l``'s term of the Lagrangian as a function of the leaves it reads (block 0:
  ``(w, mu_0, lambda_0)``, inner: ``(w, Gaussians before, Gaussians after, lambda_l)``,
  last: ``(w, Gaussians before)``): ``term(*args) -> (value, (g or None, loss or None))``.
  ``eps``: split ``l - 1``'s noise (None for block 0)."""
  opts, k = setup.opts, len(setup.net.state_shapes)

  def segment(w_l, h):  # only entry l of the weights is read (networks.apply_segment)
    return _apply(setup, (None,) * l + (w_l,), constants, batch.step, l, h)

  if l == 0:

    def term(w, proto, lam):
      h0 = segment(w, batch.images)
      labels = _first_labels(setup, h0, proto, batch)
      g = terms.first_constraint(opts, h0, proto, labels)
      rows = terms.first_rows(opts, lam, labels)
      return terms.lagrangian(opts, jnp.zeros((), jnp.float32), (g,), (rows,)), (g, None)

    return term

  mix_l = None if mix is None else mix[l - 1]

  def inputs(proto_in):
    return spread(setup, terms.block_input(opts, proto_in, eps, mix_l))

  if l == k:

    def term(w, proto_in):
      logits = segment(w, inputs(proto_in))
      loss = terms.last_loss(opts, logits, setup.sample_labels, mix_l)
      return loss, (None, loss)

    return term

  def term(w, proto_in, proto, lam):
    g = terms.block_constraint(
      opts, segment(w, inputs(proto_in)), proto, setup.sample_labels, mix_l
    )
    rows = terms.block_rows(opts, lam, setup.sample_labels, mix_l)
    return terms.lagrangian(opts, jnp.zeros((), jnp.float32), (g,), (rows,)), (g, None)

  return term


def _after(before, args):
  """``args``, made to depend on every leaf of ``before`` (a data dependency XLA must
  respect; an optimisation barrier on parameters is dropped by XLA:CPU): ``a + 0 * t``
  with ``t`` a sum of one entry of each leaf, the same values unless ``before`` holds a
  NaN or an infinity (then the step is lost anyway)."""
  t = sum(jnp.ravel(x)[0].astype(jnp.float32) for x in jax.tree.leaves(before))
  return jax.tree.map(lambda a: a + (0.0 * t).astype(a.dtype), args)


def _value_and_grad_of(setup: Setup):
  """The method's ``value_and_grad`` (``distprop.gradient``): by block, or None (the
  step then differentiates the objective whole)."""
  if setup.opts.gradient != "by_block" or setup.opts.real_inputs != "none":
    return None
  return functools.partial(value_and_grad, setup)


def _block_noise(setup: Setup, constants, key, pool, l: int, before):
  """Block ``l``'s input noise ``eps_{l-1}``: the snapshot's (``key`` None), or drawn from
  the step's key data ``key`` (and its ``pool``, :func:`terms.noise_pool`) after
  ``before`` (block ``l - 1``'s gradient): drawn up front, every split's noise would be
  live at once (10 MB at depth 64, with its intermediates 31 MB of the step's 42 MB of
  temporaries)."""
  if key is None:
    return constants["noise"][l - 1]
  key = jax.random.wrap_key_data(_after(before, key))
  return terms.split_noise(setup.opts, setup.net, key, l - 1, pool)


def value_and_grad(setup: Setup, params, constants, batch):
  r"""``((value, metrics), grads)`` of :func:`objective`, one block at a time.

  The Lagrangian is a sum of the blocks' terms, each reading its own weights, the
  Gaussians on either side and its multipliers; so its gradient is the sum of the
  terms' gradients, taken here term by term in block order. A data dependency
  (:func:`_after`) ties block ``l + 1``'s arguments to block ``l``'s gradient, so XLA
  finishes block ``l``'s forward and backward before block ``l + 1`` starts: the step
  holds one block's activations at a time, not every block's (``jax.value_and_grad`` of
  the whole sum keeps them all: the deep MLP's step needed 30 MB of temporaries at depth
  16, its gradient alone 60 MB at depth 32, past a CPU's caches; by block 13 and 22).
  Per-step noise is drawn the same way, split ``l - 1``'s after block ``l - 1``'s
  gradient (:func:`_block_noise`; drawn up front, the past-extragradient step at depth 64
  held 42 MB of temporaries, by block 11). The same function and gradient as
  ``jax.value_and_grad(objective)`` (the two terms that meet at each split's Gaussians
  are added in another order: on the deep MLP at depth 16 every leaf of the gradient
  came out bit for bit the same). Not for ``real_inputs`` other than ``"none"``
  (``distprop.gradient``: the method then differentiates the objective whole).
  """
  opts, k = setup.opts, len(setup.net.state_shapes)
  if opts.real_inputs != "none":  # the real chain's terms are not split by block
    raise ValueError("value_and_grad: real_inputs other than 'none' is differentiated whole")
  w = params["primal"]["weights"]
  protos = params["primal"]["aux"]["prototypes"]
  lams = params["dual"]["multipliers"]
  _, mix = _spread_draws(setup, (), terms.mix_of(opts, setup.net, constants, batch.step))
  step_key = pool = None  # the step's noise key, derived once, its pool (fixed noise: none)
  if opts.noise == "per_step":
    key = terms.step_key(constants, batch.step)
    step_key, pool = jax.random.key_data(key), terms.noise_pool(opts, setup.net, key)
    pool = None if pool is None else spread(setup, pool, 2)
  args_of = [(w[0], protos[0], lams[0])]
  args_of += [(w[l], protos[l - 1], protos[l], lams[l]) for l in range(1, k)]
  args_of += [(w[k], protos[k - 1])]
  done = []  # per block: (value, defect or loss, gradients by argument)
  for l, args in enumerate(args_of):
    eps = None
    if done:  # block l - 1's gradient before block l's arguments (see the docstring)
      args = _after(done[-1][2], args)
      eps = spread(setup, _block_noise(setup, constants, step_key, pool, l, done[-1][2]), 2)
    term = _block_terms(setup, constants, batch, eps, mix, l)
    argnums = tuple(range(len(args)))
    (v, (g, loss)), grads = jax.value_and_grad(term, argnums, has_aux=True)(*args)
    done.append((v, formulations.mean_abs_defect(g) if l < k else loss, grads))
  value = sum(v for v, _, _ in done)
  gw = tuple(grads[0] for _, _, grads in done)
  gp = [done[0][2][1]] + [grads[2] for _, _, grads in done[1:k]]
  for l in range(1, k + 1):  # split l - 1's Gaussians are also block l's inputs
    gp[l - 1] = jax.tree.map(jnp.add, gp[l - 1], done[l][2][1])
  gl = (done[0][2][2],) + tuple(grads[3] for _, _, grads in done[1:k])
  grads = {
    "primal": {"weights": gw, "aux": {"prototypes": tuple(gp)}},
    "dual": {"multipliers": gl},
  }
  metrics = {"loss": done[k][1], "defect": jnp.stack([d for _, d, _ in done[:k]])}
  return (value, metrics), grads
