r"""DistProp's equations, each written once: the draws, the constraint, each block's term.

Paper: Section 3 and Algorithm 1 (the package docstring gives the whole Lagrangian).
Blocks ``l = 0..K`` with splits ``0..K-1`` between them; the Gaussian of split ``l`` and
class ``c`` has mean ``mu_l[c]`` and scale ``sigma_l[c]`` (:func:`scale`).

* The draws: the noise ``eps_l`` (:func:`noise_draw`; Algorithm 1's ``eps_k`` with
  ``noise="per_step"``, :func:`step_key`), the mixtures (:func:`mix_draw`), and block
  ``l``'s input samples ``s_{l-1} = mu_{l-1} + eps_{l-1} sigma_{l-1}`` (:func:`block_input`).
* The constraint, eq. 3: the z-score ``z = (h - mu[c]) / sigma[c]`` (:func:`z_score`)
  shrunk by the margin, or the ``"l1"`` variant (:func:`constraint`).
* The terms: block 0 on real data (:func:`first_constraint`, :func:`first_rows`), an
  inner block on samples (:func:`block_constraint`, :func:`block_rows`; also an inner
  block on the real chain), the last block's (soft-label) loss (:func:`last_loss`), and
  eq. 1's Lagrangian, or the augmented one, of the constraints (:func:`lagrangian`).

The sequential method (``sequential.py``) adds them up in one Lagrangian; the
stage-parallel one (``stage_parallel.py``) evaluates each on the stage that owns it.

Example (one class, one sample: ``mu = 1``, ``sigma = softplus(0) + 0.01``):
  >>> import jax.numpy as jnp
  >>> from lagrangian_jax.methods.distprop import options
  >>> opts = options.Options("class", "sphere", 1.0, 1.0, 0, "soft", "fixed", 0.1, 0.01,
  ...                        1, 0.0, 1.0, "none", 0.0, "own", "auto")
  >>> proto = {"mu": jnp.ones((1, 2)), "rho": jnp.zeros((1, 2))}
  >>> s = block_input(opts, proto, jnp.ones((1, 1, 2)), None)  # mu + 1 sigma
  >>> [round(float(x), 4) for x in s[0]]
  [1.7031, 1.7031]
  >>> g = block_constraint(opts, s, proto, jnp.zeros((1,), int), None)  # z = 1: 1 - m
  >>> [round(float(x), 4) for x in g[0]]
  [0.9, 0.9]
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lagrangian_jax import formulations
from lagrangian_jax import threefry
from lagrangian_jax.methods import base
from lagrangian_jax.methods.distprop.options import Options

MIX_SALT = 0x6D6978  # folds the interpolation draws' key out of the noise key


# ----------------------------------------------------------------------------------
# The Gaussians and their samples (Section 3.1)
# ----------------------------------------------------------------------------------


def scale(proto, floor):
  """``sigma = softplus(rho) + floor``: the Gaussians' scales (the floor keeps the
  z-scores finite)."""
  return jax.nn.softplus(proto["rho"]) + floor


def sample(proto, noise, floor):
  """``s = mu + eps * sigma`` (Algorithm 1's synthetic states): ``(S, C, *H)``."""
  return proto["mu"][None] + noise * scale(proto, floor)[None]


def flat(x):
  """``(S, C, *H)`` -> ``(S * C, *H)`` rows, class fastest (:func:`sample_labels`)."""
  return x.reshape((-1,) + x.shape[2:])


def gaussians(opts: Options, net):
  """``net`` (a ``networks.SplitNetwork``) as the terms read it: its ``num_classes``
  counts a split's Gaussians, ``C x components`` (Gaussian ``j`` of class ``j //
  components``, :func:`components_of`); its segments, and the last one's ``C`` logits,
  are ``net``'s."""
  return net._replace(num_classes=net.num_classes * opts.components)


def sample_labels(num_classes: int, samples: int):
  """The class of each flat sample row: ``0, 1, .., C-1, 0, 1, ..`` (``S`` times)."""
  return jnp.tile(jnp.arange(num_classes), samples)


def rows_of(m, x):
  """``m @ x``: rows ``(R, C)`` of weights over the classes of a class-indexed ``x`` of
  shape ``(C, *H)``, ``(R, *H)``. A dense dot, not a gather: its gradient is another dot,
  not a scatter-add (on CPU the gathers and scatter-adds of the mixtures were more than
  half of the deep MLP's step, ``benchmarks/distprop_step_parts.py``). At full precision
  (TPUs' default f32 dot rounds through bf16): a one-hot row picks ``x[c]`` exactly."""
  return jnp.tensordot(m.astype(x.dtype), x, axes=1, precision=jax.lax.Precision.HIGHEST)


def class_rows(x, labels):
  """``x[labels]`` for class-indexed ``x``: one-hot rows times ``x`` (:func:`rows_of`).

  >>> [float(v) for v in class_rows(jnp.array([[1.0], [2.0], [3.0]]), jnp.array([2, 0]))[:, 0]]
  [3.0, 1.0]
  """
  return rows_of(jax.nn.one_hot(labels, x.shape[0], dtype=x.dtype), x)


def mixing_matrix(t, partner, num_classes: int):
  """Row ``(s, c)``: ``(1 - t) e_c + t e_partner``, ``(S * C, C)`` (class fastest)."""
  own = jnp.eye(num_classes, dtype=t.dtype)[None]
  other = jax.nn.one_hot(partner, num_classes, dtype=t.dtype)
  return flat((1 - t)[..., None] * own + t[..., None] * other)


def mixed(x, t, partner):
  """``(1 - t) x[c] + t x[partner]`` for class-indexed ``x`` of shape ``(C, *H)`` and
  ``t``, ``partner`` of shape ``(S, C)``: ``(S * C, *H)`` rows, class fastest (the order
  of the samples' labels); the mixing matrix times ``x`` (:func:`rows_of`)."""
  return rows_of(mixing_matrix(t, partner, x.shape[0]), x)


def own_rows(x, samples: int):
  """Every sample's own class's ``x``: ``x[c]`` at row ``(s, c)``, ``(S * C, *H)``: a
  broadcast (its gradient a sum over ``s``)."""
  return flat(jnp.broadcast_to(x[None], (samples,) + x.shape))


def block_input(opts: Options, proto, eps, mix):
  """Block ``l``'s input rows from split ``l - 1``'s Gaussians (``proto``, ``eps``):
  ``s = mu[c] + eps * sigma[c]``, or with a mixture ``(t, partner)`` (``mix_fraction``)
  ``s = mixed(mu) + eps * mixed(sigma)``, a Gaussian moved a share ``t`` of the way to
  class ``partner``. ``(S * C, *H)``."""
  if mix is None:
    return flat(sample(proto, eps, opts.sigma_floor))
  t, partner = mix
  return mixed(proto["mu"], t, partner) + flat(eps) * mixed(
    scale(proto, opts.sigma_floor), t, partner
  )


# ----------------------------------------------------------------------------------
# The draws: fixed once, or a pure function of the seed and the step (Algorithm 1)
# ----------------------------------------------------------------------------------


def noise_draw(key, split, samples: int, num_classes: int, shape, rng: str = "jax"):
  """Split ``split``'s ``eps``, ``(S, C, *shape)``: a pure function of ``(key, split)``,
  from ``jax.random`` or (``rng="hash"``, ``config.distprop.noise_rng``) the fused
  Threefry hash of :mod:`lagrangian_jax.threefry` with the split as its stream."""
  shape = (samples, num_classes) + tuple(shape)
  if rng == "hash":
    return threefry.normal(key, split, shape)
  return jax.random.normal(jax.random.fold_in(key, split), shape, jnp.float32)


POOL_STREAM = 0x7FFFFFFF  # the pool's stream (no split's index)
ROTATION_STREAMS = 0x40000000  # + split: the split's rotation of the pool


def _words(key, stream, shape, rng: str):
  """uint32 words of ``shape``, a pure function of ``(key, stream)``."""
  if rng == "hash":
    return threefry.bits(key, stream, shape)
  return jax.random.bits(jax.random.fold_in(key, stream), shape, jnp.uint32)


def pool_draw(key, samples: int, num_classes: int, size: int, rng: str = "jax"):
  """The step's pool of ``(S, C, size)`` normals, written twice along its last axis
  (``(S, C, 2 size)``: a rotation of it is one slice, :func:`pooled_draw`)."""
  pool = noise_draw(key, POOL_STREAM, samples, num_classes, (size,), rng)
  return jnp.concatenate([pool, pool], -1)


def pooled_draw(ring, key, split, shape, rng: str = "jax"):
  r"""Split ``split``'s ``eps``, ``(S, C, *shape)``, made from the step's pool ``ring``
  (:func:`pool_draw`'s, ``distprop.noise_draws="pooled"``): each row's features rotated
  by one offset ``o`` uniform on ``0..P-1`` and every entry's sign flipped by its own
  fair bit ``b``:

  .. math:: \epsilon_l[s, c, j] = (-1)^{b_l[s, c, j]}\, \mathrm{pool}[s, c, (o_l + j) \bmod P]

  for ``j < prod(shape) <= P``. Given the pool, the signs are independent fair coins, so
  each split's entries are i.i.d. standard normals, exactly as a draw of its own; two
  splits share the pool's magnitudes (rotated apart). Each block reads one split's noise
  (block ``l`` the input samples of split ``l - 1``), so every term's expectation, the
  Lagrangian's, and its gradient's are those of independent draws; only the gradient's
  variance across blocks can differ. The cost per split is its sign bits (one word per 32
  entries of the pool's width) and a copy, not ``prod(shape)`` normals: at the deep MLP's
  depth 64 the step's 2.6 M normals become 41 K.

  >>> import jax, jax.numpy as jnp
  >>> key = jax.random.key(0)
  >>> ring = pool_draw(key, 2, 3, 5)
  >>> eps = pooled_draw(ring, key, 1, (4,))
  >>> eps.shape
  (2, 3, 4)
  >>> bool(jnp.all(jnp.isin(jnp.abs(eps), jnp.abs(ring))))
  True
  """
  samples, num_classes, size = ring.shape[0], ring.shape[1], ring.shape[2] // 2
  n = math.prod(shape)
  if n > size:
    raise ValueError(f"pooled_draw: split shape {tuple(shape)} has more than the pool's {size}")
  offset = _words(key, split + ROTATION_STREAMS, (1,), rng)[0] % np.uint32(size)
  # at the pool's whole width, then the split's first n entries: with n in the signs'
  # shapes, XLA:CPU took minutes to compile a narrower split (AVX-512 hosts, the hash)
  window = jax.lax.dynamic_slice_in_dim(ring, offset.astype(jnp.int32), size, axis=-1)
  words = _words(key, split, (samples, num_classes, -(-size // 32)), rng)
  signs = (words[..., None] >> jnp.arange(32, dtype=jnp.uint32)) << np.uint32(31)
  signs = signs.reshape(samples, num_classes, -1)[..., :size]
  eps = jax.lax.bitcast_convert_type(
    jax.lax.bitcast_convert_type(window, jnp.uint32) ^ signs, jnp.float32
  )
  return eps[..., :n].reshape((samples, num_classes) + tuple(shape))


def mix_draw(key, block, samples: int, num_classes: int, num_mixed: int, rng: str = "jax"):
  """Block ``block``'s ``(t, partner)``, each ``(S, C)``: rows ``s < num_mixed``
  interpolate towards class ``partner`` by ``t ~ U(0, 1/2)``, the others have ``t = 0``
  (the class Gaussian). A pure function of ``(key, block)``: every stage of a
  stage-parallel run draws its own blocks' alike. ``rng`` as :func:`noise_draw`'s (the
  hash's partner: one of the ``C - 1`` others by its word modulo ``C - 1``, a bias
  under ``C / 2**32``)."""
  others = max(num_classes, 2) - 1
  if rng == "hash":
    words = threefry.bits(key, block, (2, samples, num_classes))
    t = threefry.to_uniform(words[0], 0.0, 0.5)
    shift = 1 + (words[1] % jnp.uint32(others)).astype(jnp.int32)
  else:
    k_t, k_b = jax.random.split(jax.random.fold_in(key, block))
    t = jax.random.uniform(k_t, (samples, num_classes), jnp.float32, 0.0, 0.5)
    shift = jax.random.randint(k_b, (samples, num_classes), 1, others + 1)
  t = jnp.where(jnp.arange(samples)[:, None] < num_mixed, t, 0.0)
  return t, (jnp.arange(num_classes)[None] + shift) % num_classes


def step_key(constants, step):
  """``noise="per_step"``: the key of iteration ``step``'s draws (Algorithm 1's
  ``eps_k``), the same at both extragradient half-steps and on resume."""
  return jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), step)


def mixture_key(key):
  """The mixtures' key, folded out of the noise key."""
  return jax.random.fold_in(key, MIX_SALT)


def noise_pool(opts: Options, net, key):
  """The draws' pool (``distprop.noise_draws="pooled"``: :func:`pooled_draw`), one
  ``(S, C, P)`` draw with ``P`` the largest split's size, written twice
  (:func:`pool_draw`); None for draws per split."""
  if opts.noise_draws != "pooled":
    return None
  size = max(math.prod(s) for s in net.state_shapes)
  return pool_draw(key, opts.samples_per_class, net.num_classes, size, opts.noise_rng)


def split_noise(opts: Options, net, key, split: int, pool=None) -> jax.Array:
  """``eps_split`` from the draws' key (:func:`noise_draw` with the options' sizes, or
  :func:`pooled_draw` of ``pool``, :func:`noise_pool`'s, drawn here if not given)."""
  shape = net.state_shapes[split]
  if opts.noise_draws == "pooled":
    pool = noise_pool(opts, net, key) if pool is None else pool
    return pooled_draw(pool, key, split, shape, opts.noise_rng)
  return noise_draw(key, split, opts.samples_per_class, net.num_classes, shape, opts.noise_rng)


def split_noises(opts: Options, net, key) -> tuple:
  """``eps_l`` of every split ``l = 0..K-1`` from one key."""
  pool = noise_pool(opts, net, key)
  return tuple(split_noise(opts, net, key, l, pool) for l in range(len(net.state_shapes)))


def block_mixes(opts: Options, net, key) -> tuple:
  """The ``(t, partner)`` of every block ``l = 1..K`` from the mixtures' key: one
  :func:`mix_draw` ``vmap``-ped over the blocks, the same bits as a draw per block. (On
  CPU each draw's key derivations are a few tiny threefry loops, tens of dispatched ops
  per block: at depth 64, per block, the draws cost 14x the batched one.)"""
  k = len(net.state_shapes)
  t, partner = jax.vmap(
    lambda l: mix_draw(
      key, l, opts.samples_per_class, net.num_classes, opts.num_mixed, opts.noise_rng
    )
  )(jnp.arange(1, k + 1))
  return tuple((t[l], partner[l]) for l in range(k))


def initial_draws(opts: Options, net, key) -> dict:
  """The draws' constants. ``noise="fixed"``: one snapshot of the noise (and mixtures)
  drawn at initialisation (Section 3.1's "fixed snapshot"); ``"per_step"``: the key
  (raw key data: checkpoints and the seed axis hold plain arrays)."""
  if opts.noise != "fixed":
    return {"noise_key": jax.random.key_data(key)}
  constants = {"noise": split_noises(opts, net, key)}
  if opts.num_mixed:
    constants["mix"] = block_mixes(opts, net, mixture_key(key))
  return constants


def noise_of(opts: Options, net, constants, step) -> tuple:
  """The ``eps_l`` of every split at iteration ``step``."""
  if opts.noise == "fixed":
    return constants["noise"]
  return split_noises(opts, net, step_key(constants, step))


def mix_of(opts: Options, net, constants, step):
  """The ``(t, partner)`` of every block at iteration ``step``; None without mixtures."""
  if not opts.num_mixed:
    return None
  if opts.noise == "fixed":
    return constants["mix"]
  return block_mixes(opts, net, mixture_key(step_key(constants, step)))


# ----------------------------------------------------------------------------------
# The constraint (eq. 3) and each block's term
# ----------------------------------------------------------------------------------


def target_rows(opts: Options, x, labels, mix):
  """Each row's entry of the class-indexed ``x`` (means, scales, multipliers, one-hot
  labels): ``x[labels]``, or for a mixture its target, the own class
  (``mix_targets="own"``: the block snaps inputs between Gaussians back to their class)
  or the same mixture of ``x`` (``"mixed"``: an affine relay)."""
  if mix is None:
    return class_rows(x, labels)
  t, partner = mix
  if opts.own_targets:  # x[labels]: the samples' labels are every class S times
    return own_rows(x, t.shape[0])
  return mixed(x, t, partner)


def z_score(h, mu, sigma):
  """``z = (h - mu[c]) / sigma[c]`` for rows ``mu``, ``sigma`` of each ``h``'s target:
  the argument of eq. 3."""
  return (h - mu) / sigma


def constraint(opts: Options, z, l1: bool = False):
  """Eq. 3: ``shrink_m(z)``, the z-score made epsilon-insensitive with the margin ``m``
  (soft or hard shrinkage, ``formulations.epsilon_insensitive``): zero in the band
  ``|z| <= m``. ``l1``: one scalar per row, ``relu(mean_j |z_j| - m)`` (the ImageNet
  experiment's L1 constraint, on the z-score so that the margin means the same)."""
  if l1:
    axes = tuple(range(1, z.ndim))
    return jax.nn.relu(jnp.mean(jnp.abs(z), axis=axes) - opts.margin)
  return formulations.epsilon_insensitive(z, opts.margin, opts.shrinkage)


def first_constraint(opts: Options, h0, proto, labels):
  """Block 0's term on real data (Algorithm 1's dataset projection):
  ``g_0^{(i)} = shrink_m((f_0(x_i) - mu_0[y_i]) / sigma_0[y_i])`` (``"l1"``: its scalar
  form), with ``m = first_margin`` where that is set (``>= 0``): the band on the real
  digits apart from the one on the samples."""
  mu, sigma = proto["mu"], scale(proto, opts.sigma_floor)
  z0 = z_score(h0, class_rows(mu, labels), class_rows(sigma, labels))
  return constraint(first_opts(opts), z0, l1=opts.multipliers == "l1")


def first_opts(opts: Options) -> Options:
  """``opts`` with block 0's margin: ``first_margin`` where set (``>= 0``)."""
  return opts._replace(margin=opts.first_margin) if opts.first_margin >= 0 else opts


def first_rows(opts: Options, lam0, labels):
  """The multipliers of block 0's rows: their class's, or (a per-example table already
  gathered to the batch) each example's own, at its natural scale."""
  if opts.multipliers == "class":
    return class_rows(lam0, labels)
  return formulations.per_example_rows(lam0)


def block_constraint(opts: Options, out, proto, labels, mix):
  """An inner block's term on its inputs (Algorithm 1's synthetic-state constraint):
  ``g_l = shrink_m((f_l(s_{l-1}) - mu_l[c]) / sigma_l[c])`` with the target of each row
  (:func:`target_rows`); also the real chain's ``f_l(h_{l-1})`` (``mix=None``)."""
  mu = target_rows(opts, proto["mu"], labels, mix)
  sigma = target_rows(opts, scale(proto, opts.sigma_floor), labels, mix)
  return constraint(opts, z_score(out, mu, sigma))


def block_rows(opts: Options, lam, labels, mix):
  """The multipliers of an inner block's rows: their target's (a mixture's: the same
  mixture of its two classes' multipliers)."""
  return target_rows(opts, lam, labels, mix)


def last_loss(opts: Options, logits, labels, mix):
  r"""The last block's loss, :math:`\frac{1}{SC}\sum_{s,c}\ell(f_K(s_{K-1}^{(s,c)}), c)`:
  softmax cross-entropy against each row's class, or a mixture's soft label (its
  target's one-hot rows, :func:`target_rows`). With ``components = K > 1`` the labels
  index Gaussians and Gaussian ``j`` belongs to class ``j // K`` (:func:`components_of`)."""
  k = opts.components
  if mix is None:
    return base.cross_entropy(logits, labels // k if k > 1 else labels)
  onehots = jnp.repeat(jnp.eye(logits.shape[-1], dtype=jnp.float32), k, axis=0)
  targets = target_rows(opts, onehots, labels, mix)
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), targets))


def prototype_logits(opts: Options, h, proto):
  r"""Each row's log-likelihood under every class's Gaussian of the split, up to a
  constant: :math:`\ell_c(h) = -\tfrac12 \sum_j z_{cj}^2 - \sum_j \log\sigma_{cj}`,
  ``z_c = (h - mu[c]) / sigma[c]``; ``(R, C)``. Its softmax is the posterior class of
  ``h`` under the split's Gaussians (equal priors): the prototypes as a classifier.

  >>> proto = {"mu": jnp.array([[0.0], [2.0]]), "rho": jnp.full((2, 1), 0.5413)}
  >>> opts = Options("class", "sphere", 1.0, 1.0, 0, "soft", "fixed", 0.1, 0.0, 1, 0.0,
  ...                1.0, "local", 0.0, "own", "auto")  # sigma = softplus(0.5413) = 1
  >>> [round(float(v), 3) for v in prototype_logits(opts, jnp.array([[1.5]]), proto)[0]]
  [-1.125, -0.125]
  """
  mu, sigma = proto["mu"], scale(proto, opts.sigma_floor)
  c = mu.shape[0]
  h2, mu2, sigma2 = h.reshape(h.shape[0], 1, -1), mu.reshape(1, c, -1), sigma.reshape(1, c, -1)
  z = z_score(h2.astype(jnp.float32), mu2, sigma2)
  return -0.5 * jnp.sum(z * z, -1) - jnp.sum(jnp.log(sigma2), -1)


def log_likelihoods(opts: Options, h, proto):
  r""":func:`prototype_logits` as dots, ``(R, G)`` for ``G`` Gaussians:
  :math:`-\tfrac12(h^2 \cdot \sigma^{-2} - 2 h \cdot \mu\sigma^{-2} + \mu^2 \cdot
  \sigma^{-2}) - \sum_j \log\sigma_j`, without the ``(R, G, H)`` differences (a
  convolutional split's ``H`` is thousands)."""
  mu, sigma = proto["mu"], scale(proto, opts.sigma_floor)
  g = mu.shape[0]
  h2 = h.reshape(h.shape[0], -1).astype(jnp.float32)
  mu2, inv = mu.reshape(g, -1), 1.0 / jnp.square(sigma.reshape(g, -1))
  dot = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  sq = dot(h2 * h2, inv.T) - 2.0 * dot(h2, (mu2 * inv).T) + jnp.sum(mu2 * mu2 * inv, -1)
  return -0.5 * sq - jnp.sum(jnp.log(sigma.reshape(g, -1)), -1)


def components_of(opts: Options, h, proto, labels):
  r"""Each real row's Gaussian at a split with ``components = K`` Gaussians per class
  (Gaussian ``j`` of class ``j // K``): of its class's ``K``, the most likely,
  :math:`cK + \arg\max_k \ell_{cK+k}(h)` (:func:`log_likelihoods`), a hard assignment
  held fixed (no gradient), as k-means' assignment step; the labels themselves when
  ``K = 1``. One Gaussian per class maps every digit of a class to one point (in its
  band), losing what later blocks could use (``docs/depth/README.md``); ``K`` of them
  were to keep a class's modes apart (measured at depth 16, they keep no more:
  ``configs/deep_mlp_distprop.py``).

  >>> opts = Options("class", "sphere", 1.0, 1.0, 0, "soft", "fixed", 0.1, 0.0, 1, 0.0,
  ...                1.0, "none", 0.0, "own", "auto", components=2)
  >>> proto = {"mu": jnp.array([[0.0], [4.0], [1.0], [3.0]]), "rho": jnp.full((4, 1), 0.5413)}
  >>> [int(j) for j in components_of(opts, jnp.array([[3.5], [3.5]]), proto, jnp.array([0, 1]))]
  [1, 3]
  """
  k = opts.components
  if k == 1:
    return labels
  ll = log_likelihoods(opts, jax.lax.stop_gradient(h), jax.lax.stop_gradient(proto))
  ll = ll.reshape(h.shape[0], -1, k)  # (R, C, K)
  own = jnp.take_along_axis(ll, labels[:, None, None], axis=1)[:, 0]
  return labels * k + jnp.argmax(own, -1)


def local_loss(opts: Options, h, proto, labels, head=None):
  r"""``real_inputs="local"``: a block's local loss on the real rows it maps,
  :math:`\frac1B\sum_i -\log \mathrm{softmax}(\ell(h_i))_{y_i}` with the split's
  Gaussians as the classifier (:func:`prototype_logits`): it pulls ``h_i`` into its
  class's Gaussian and away from the others (decoupled greedy learning's auxiliary
  loss, with no auxiliary parameters). With ``components = K > 1`` a class's likelihood
  is the mixture of its ``K`` Gaussians (equal weights): its logit the ``logsumexp`` of
  theirs.

  With ``local_head="linear"`` the classifier is the split's own linear read-out
  ``head``, :math:`\ell(h) = A^\top \mathrm{vec}(h) + b` (decoupled greedy learning's
  auxiliary classifier, Belilovsky et al. 2020): it asks only that the classes be
  linearly separable at the split, not that each sit at its Gaussian, so it does not
  pull a class's rows together. ``A`` and ``b`` start at zero.

  >>> opts = Options("class", "sphere", 1.0, 1.0, 0, "soft", "fixed", 0.1, 0.0, 1, 0.0,
  ...                1.0, "local", 0.0, "own", "auto", local_head="linear")
  >>> head = {"kernel": jnp.zeros((2, 3)), "bias": jnp.zeros(3)}
  >>> round(float(local_loss(opts, jnp.ones((4, 2)), None, jnp.arange(4) % 3, head)), 4)
  1.0986
  """
  if head is not None:
    logits = h.reshape(h.shape[0], -1) @ head["kernel"] + head["bias"]
    return base.cross_entropy(logits, labels)
  logits = prototype_logits(opts, h, proto) / opts.local_temperature
  if opts.components > 1:
    logits = jax.nn.logsumexp(logits.reshape(h.shape[0], -1, opts.components), -1)
  return base.cross_entropy(logits, labels)


def lagrangian(opts: Options, value, constraints, rows):
  """Eq. 1's Lagrangian ``value + <rows, g>`` of the constraints, or the augmented one
  (``+ c/2 |g|^2``, ``augmented_coefficient = c > 0``), with ``reduction="batch_mean"``:
  means over the batch and over the ``S x C`` samples."""
  if opts.augmented_coefficient > 0:
    return formulations.augmented_lagrangian(
      value, constraints, rows, penalty=opts.augmented_coefficient, reduction="batch_mean"
    )
  return formulations.lagrangian(value, constraints, rows, reduction="batch_mean")
