r"""Online alternating minimisation with auxiliary variables (Choromanska et al. 2019).

Reference: A. Choromanska, B. Cowen, S. Kumaravel, R. Luss, M. Rigotti, I. Rish,
P. Diachille, V. Gurev, B. Kingsbury, R. Tejwani, D. Bouneffouf, *Beyond Backprop: Online
Alternating Minimization with Auxiliary Variables*, ICML 2019 (arXiv:1806.09077).

Codes are the pre-activations at the splits. Segment ``l < L`` is ``f_l = \phi_l \circ
p_l``, where ``p_l`` is the segment without its trailing ReLU and ``phi_l`` that ReLU
(identity with ``split_activation="identity"``). For a batch, with codes ``c_l`` (one per
split) and ``\phi_{-1}(c_{-1}) = x``, the alternating-minimisation energy is

.. math::
  E(c, w) = \sum_i \Big[\ell\big(f_L(\phi_{L-1}(c_{L-1,i})), y_i\big)
    + \mu \sum_{l<L} \big|c_{l,i} - p_l(\phi_{l-1}(c_{l-1,i}))\big|^2\Big] .

One training step (nothing is kept per example between batches):

1. codes start at the forward pass, ``c_l = p_l(\phi_{l-1}(c_{l-1}))`` (every penalty 0);
2. ``K`` gradient steps on the codes with the weights fixed,
   ``c \leftarrow c - \gamma \nabla_c E(c, w)`` (``lax.fori_loop``; per example, since
   ``E`` is a sum over the batch), then ``stop_gradient``;
3. the weights descend ``E(\mathrm{sg}\,c, w) / B``: segment ``l < L`` only sees its
   local loss ``\mu |c_l - p_l(\phi_{l-1}(c_{l-1}))|^2`` and the last segment the output
   loss on ``c_{L-1}``; no gradient crosses a segment boundary.

``K = config.oam.code_steps``, ``gamma = config.oam.code_learning_rate``,
``mu = config.oam.penalty``. The weight step is one step of the configured optimizer
(``config.optimizer``, the paper's "AM-Adam" flavour); the paper's alternative, closed-form
weight updates from per-layer memory matrices ("AM-mem"), is not implemented. The
per-split "defect" is ``mean |c_l - p_l(\phi_{l-1}(c_{l-1}))|`` after the code steps: how
far the codes that the weights are asked to fit are from what the layer produces.

Small code steps: at the forward pass only the output loss has a gradient, so step ``k``
first moves the code ``k`` splits below the top; with fewer than ``L`` steps the lowest
segments get no update at all. To first order in ``gamma`` the code moves are the
backpropagated gradients (scaled), so with a scale-free step rule (adam) and the stable
``gamma`` of ``configs/oam.py`` the local updates stay close to backprop's.

Example (one code step; the last code moves against the output loss):
  >>> import ml_collections
  >>> from lagrangian_jax import networks
  >>> from lagrangian_jax.methods import base
  >>> net = networks.build_network(
  ...     "mlp", depth=1, width=8, split="every", split_activation="relu")
  >>> config = ml_collections.ConfigDict({"oam": {"code_steps": 1,
  ...     "code_learning_rate": 0.1, "penalty": 1.0}})
  >>> method = make(config, net, num_train=8)
  >>> params, constants = method.init(jax.random.key(0), None)
  >>> batch = base.Batch(jnp.ones((4, 28, 28, 1)), jnp.arange(4), jnp.arange(4))
  >>> value, metrics = method.objective(params, constants, batch)
  >>> bool(metrics["defect"][0] > 0), metrics["defect"].shape
  (True, (1,))
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import config_rules
from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods import base

sg = jax.lax.stop_gradient


def preactivation_segments(net: networks.SplitNetwork):
  """``[(p_l, phi_l)]`` for the segments before the last: each without its trailing ReLU.

  ``p_l`` is a ``networks.Segment`` with the same parameter tree as segment ``l`` (a ReLU
  has no parameters), so it applies to ``weights[l]``.
  """
  out = []
  for seg in net.segments[:-1]:
    if seg.layers and isinstance(seg.layers[-1], networks.ReLU):
      pre = seg.clone(layers=seg.layers[:-1])  # its dtype and implementations kept
      out.append((pre, jax.nn.relu))
    else:
      out.append((seg, lambda a: a))
  return out


class _OAM(NamedTuple):
  """What OAM's functions read: the network, its pre-activation segments, the options."""

  net: networks.SplitNetwork
  pre: list  # preactivation_segments(net)
  steps: int  # K: gradient steps on the codes per batch
  gamma: float  # their step size
  mu: float  # the penalty's weight

  @property
  def num_splits(self) -> int:
    return len(self.net.state_shapes)


def _checked_options(config, net: networks.SplitNetwork) -> _OAM:
  config_rules.validate(config, "oam")
  opts = config.oam
  need = errors.require
  steps = opts.code_steps
  need(len(net.state_shapes) > 0, "network.split", "method 'oam' needs at least one split")
  gamma, mu = float(opts.code_learning_rate), float(opts.penalty)
  return _OAM(net, preactivation_segments(net), steps, gamma, mu)


def _init(o: _OAM, rng, map_train):
  del map_train
  return {"primal": {"weights": networks.init_network(o.net, rng)}, "dual": {}}, {}


def _layer_inputs(o: _OAM, codes, images):
  """``phi_{l-1}(c_{l-1})`` for every segment ``l = 0 .. L`` (``x`` for ``l = 0``)."""
  return [images] + [phi(c) for (_, phi), c in zip(o.pre, codes)]


def _predictions(o: _OAM, w, codes, images):
  """``p_l(phi_{l-1}(c_{l-1}))`` for ``l < L``, and the logits."""
  inputs = _layer_inputs(o, codes, images)
  preds = [p.apply({"params": w[l]}, inputs[l]) for l, (p, _) in enumerate(o.pre)]
  return preds, networks.apply_segment(o.net, w, o.num_splits, inputs[-1]).astype(jnp.float32)


def _energy(o: _OAM, w, codes, images, labels):
  """``E(c, w)``, summed over the batch; also its parts."""
  preds, logits = _predictions(o, w, codes, images)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  gaps = [c - q for c, q in zip(codes, preds)]
  penalty = sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in gaps)
  return jnp.sum(losses) + o.mu * penalty, gaps


def _forward_codes(o: _OAM, w, images):
  codes, h = [], images
  for l, (p, phi) in enumerate(o.pre):
    codes.append(p.apply({"params": w[l]}, h))
    h = phi(codes[-1])
  return tuple(codes), networks.apply_segment(o.net, w, o.num_splits, h)


def _relax(o: _OAM, w, images, labels):
  """Steps 1-2: codes from the forward pass, then ``K`` gradient steps on them."""
  w = sg(w)
  codes, logits = _forward_codes(o, w, images)
  code_grad = jax.grad(lambda c: _energy(o, w, c, images, labels)[0])

  def step(_, c):
    return jax.tree.map(lambda x, g: x - o.gamma * g, c, code_grad(c))

  return sg(jax.lax.fori_loop(0, o.steps, step, codes)), logits


def _defects_of(gaps):
  return jnp.stack([jnp.mean(jnp.abs(g)) for g in gaps])


def _objective(o: _OAM, params, constants, batch):
  del constants
  w = params["primal"]["weights"]
  codes, logits = _relax(o, w, batch.images, batch.labels)
  value, gaps = _energy(o, w, codes, batch.images, batch.labels)
  loss = base.cross_entropy(logits, batch.labels)  # the real network's, before relaxing
  return value / batch.labels.shape[0], {"loss": loss, "defect": _defects_of(sg(gaps))}


def _defects(o: _OAM, params, constants, batch):
  del constants
  w = params["primal"]["weights"]
  codes, _ = _relax(o, w, batch.images, batch.labels)
  return _defects_of(_energy(o, w, codes, batch.images, batch.labels)[1])


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  del num_train
  o = _checked_options(config, net)
  return base.Method(
    name="oam",
    default_solver="descent",
    init=functools.partial(_init, o),
    objective=functools.partial(_objective, o),
    defects=functools.partial(_defects, o),
  )
