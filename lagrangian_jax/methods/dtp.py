r"""Difference target propagation (Lee et al. 2015), as one objective for any optimizer.

Reference: D.-H. Lee, S. Zhang, A. Fischer, Y. Bengio, *Difference Target Propagation*,
ECML-PKDD 2015 (arXiv:1412.7525), Algorithm 1.

For segments ``f_0 .. f_L`` with outputs ``h_l = f_l(h_{l-1})``, ``h_{-1} = x``, every
segment ``l = 1 .. L-1`` has a learned approximate inverse

.. math::
  g_l(h_l) = \phi(V_l\, h_l + c_l) \approx h_{l-1},

``phi = config.dtp.inverse_activation`` (``tanh`` in ``configs/dtp.py``, as in the paper;
``relu``, the domain of ``h_{l-1}``, measured worse). Targets go top-down, the top one a
gradient step on the per-example loss and the others with the difference correction
(which makes ``t_{l-1} = h_{l-1}`` when ``t_l = h_l`` whatever the error of ``g_l``):

.. math::
  t_{L-1} = h_{L-1} - \eta\, \frac{\partial \ell(f_L(h_{L-1}), y)}{\partial h_{L-1}},
  \qquad t_{l-1} = h_{l-1} + g_l(t_l) - g_l(h_l) .

With ``sg`` = ``stop_gradient`` (targets carry no gradient), ``\epsilon \sim N(0,
\sigma^2)`` and means over the batch, the objective is the sum of every local loss; each
parameter appears in exactly one, so its gradient is DTP's update of that parameter:

.. math::
  \mathcal L = \ell(f_L(\mathrm{sg}\,h_{L-1}), y)
    + \sum_{l<L} \big|f_l(\mathrm{sg}\,h_{l-1}) - \mathrm{sg}\,t_l\big|^2
    + \sum_{l=1}^{L-1} \big|g_l(f_l^{\mathrm{sg}}(\mathrm{sg}\,h_{l-1} + \epsilon_l))
      - (\mathrm{sg}\,h_{l-1} + \epsilon_l)\big|^2 ,

``f^sg``: ``f_l`` with stopped weights (the reconstruction loss trains ``g_l`` only).
``|.|^2`` is the squared norm per example. The inverses ``(V_l, c_l)`` live in
``params['primal']['aux']['inverses']``, their own learning-rate group ``inverses``
(rate ``config.dtp.inverse_learning_rate``); ``eta = config.dtp.target_step``,
``sigma = config.dtp.noise``.

Noise: a pure function of the run's seed and the batch. ``init`` stores a key drawn
from the run's rng in ``constants['noise_key']`` (raw key data, so it checkpoints);
the objective folds in a hash of ``batch.indices`` (themselves a pure function of
``(seed, step)``), so an extragradient's two evaluations, and a resumed run, see the
same noise, and different batches different noise.

Per-split "defect": the mean absolute distance ``mean |h_l - t_l|`` of each state to
its target (for ``l = L-1``: ``eta |dl/dh_{L-1}|``).

Deviations from the paper: the last segment learns from the loss itself (the paper
puts the first target on the softmax output), the inverses are one affine layer plus
``phi`` per segment (the paper's ``tanh`` layers), and every local loss is minimised by
one step of the configured optimizer per batch, together with the inverses (the paper
alternates inverse and forward updates).

Example:
  >>> import ml_collections
  >>> from lagrangian_jax import networks
  >>> from lagrangian_jax.methods import base
  >>> net = networks.build_network(
  ...     "mlp", depth=2, width=16, split="every", split_activation="relu")
  >>> config = ml_collections.ConfigDict({"dtp": {"noise": 0.1, "target_step": 0.5,
  ...     "inverse_learning_rate": 1e-3, "inverse_activation": "relu"}})
  >>> method = make(config, net, num_train=8)
  >>> params, constants = method.init(jax.random.key(0), None)
  >>> [v["kernel"].shape for v in params["primal"]["aux"]["inverses"]]  # g_1: h_1 -> h_0
  [(16, 16)]
  >>> batch = base.Batch(jnp.ones((4, 28, 28, 1)), jnp.arange(4), jnp.arange(4))
  >>> value, metrics = method.objective(params, constants, batch)
  >>> metrics["defect"].shape
  (2,)
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import config_rules
from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods import base

sg = jax.lax.stop_gradient
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "identity": lambda a: a}


class _DTP(NamedTuple):
  """What DTP's functions read: the network and the options of ``config.dtp``."""

  net: networks.SplitNetwork
  noise: float  # std of the corruption in the inverses' reconstruction loss
  eta: float  # the top target's step
  phi: Callable  # the inverses' activation

  @property
  def num_splits(self) -> int:
    return len(self.net.state_shapes)


def _checked_options(config, net: networks.SplitNetwork) -> _DTP:
  config_rules.validate(config, "dtp")
  opts = config.dtp
  need = errors.require
  need(len(net.state_shapes) > 0, "network.split", "method 'dtp' needs at least one split")
  return _DTP(net, float(opts.noise), float(opts.target_step), ACTIVATIONS[opts.inverse_activation])


def _init(d: _DTP, rng, map_train):
  del map_train
  shapes = d.net.state_shapes
  k_w, k_v, k_noise = jax.random.split(rng, 3)
  weights = networks.init_network(d.net, k_w)
  inverses = []
  for l in range(1, d.num_splits):
    n_in, n_out = math.prod(shapes[l]), math.prod(shapes[l - 1])
    kernel = jax.nn.initializers.lecun_normal()(
      jax.random.fold_in(k_v, l), (n_in, n_out), jnp.float32
    )
    inverses.append({"kernel": kernel, "bias": jnp.zeros((n_out,), jnp.float32)})
  params = {"primal": {"weights": weights, "aux": {"inverses": tuple(inverses)}}, "dual": {}}
  return params, {"noise_key": jax.random.key_data(k_noise)}


def _inverse(d: _DTP, v, l, h):
  """``g_l(h_l)``, with ``v = inverses[l - 1]``, shaped like ``h_{l-1}``."""
  flat = h.reshape(h.shape[0], -1).astype(jnp.float32)
  return d.phi(flat @ v["kernel"] + v["bias"]).reshape((h.shape[0], *d.net.state_shapes[l - 1]))


def _batch_key(constants, indices):
  # A hash of the batch's rows (a pure function of (seed, step)): no step counter needed.
  idx = indices.astype(jnp.uint32)
  odd = jnp.arange(idx.shape[0], dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
  return jax.random.fold_in(jax.random.wrap_key_data(constants["noise_key"]), jnp.sum(idx * odd))


def _targets(d: _DTP, w, v, hs, labels):
  """``t_0 .. t_{L-1}``, stopped: DTP's targets for every state."""
  w, v, hs = sg(w), sg(v), [sg(h) for h in hs]
  num_splits = d.num_splits

  def summed_loss(h):  # the per-example loss summed: its gradient is per example
    logits = networks.apply_segment(d.net, w, num_splits, h).astype(jnp.float32)
    return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  t = [None] * num_splits
  t[-1] = hs[-1] - d.eta * jax.grad(summed_loss)(hs[-1])
  for l in range(num_splits - 1, 0, -1):
    t[l - 1] = hs[l - 1] + _inverse(d, v[l - 1], l, t[l]) - _inverse(d, v[l - 1], l, hs[l])
  return [sg(x) for x in t]


def _sq_norm(x):  # per example, averaged over the batch
  return jnp.sum(jnp.square(x.astype(jnp.float32))) / x.shape[0]


def _defects_of(hs, t):
  return jnp.stack([jnp.mean(jnp.abs(h - x)) for h, x in zip(hs, t)])


def _reconstruction(d: _DTP, w, v, hs, key):
  """The inverses' loss: each ``g_l`` undoes ``f_l`` on a corrupted ``h_{l-1}``."""
  reconstruction = 0.0
  for l in range(1, d.num_splits):
    corrupted = sg(hs[l - 1]) + d.noise * jax.random.normal(
      jax.random.fold_in(key, l), hs[l - 1].shape, jnp.float32
    )
    image = networks.apply_segment(d.net, sg(w), l, corrupted)
    reconstruction = reconstruction + _sq_norm(_inverse(d, v[l - 1], l, image) - corrupted)
  return reconstruction


def _objective(d: _DTP, params, constants, batch):
  w = params["primal"]["weights"]
  v = params["primal"]["aux"]["inverses"]
  hs, logits = base.detached_forward(d.net, w, batch.images)
  loss = base.cross_entropy(logits, batch.labels)
  t = _targets(d, w, v, hs, batch.labels)
  local = sum(_sq_norm(h - x) for h, x in zip(hs, t))
  reconstruction = _reconstruction(d, w, v, hs, _batch_key(constants, batch.indices))
  value = loss + local + reconstruction
  return value, {
    "loss": loss,
    "defect": _defects_of(hs, t),
    "reconstruction": jnp.asarray(reconstruction, jnp.float32),
  }


def _defects(d: _DTP, params, constants, batch):
  del constants
  w = params["primal"]["weights"]
  hs, _ = base.detached_forward(d.net, w, batch.images)
  return _defects_of(hs, _targets(d, w, params["primal"]["aux"]["inverses"], hs, batch.labels))


def _primal_labels(primal):
  del primal
  return {"weights": "weights", "aux": "inverses"}


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  del num_train
  d = _checked_options(config, net)
  return base.Method(
    name="dtp",
    default_solver="descent",
    init=functools.partial(_init, d),
    objective=functools.partial(_objective, d),
    defects=functools.partial(_defects, d),
    primal_labels=_primal_labels,
    group_rates={"inverses": float(config.dtp.inverse_learning_rate)},
  )
