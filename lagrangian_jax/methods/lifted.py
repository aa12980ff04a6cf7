r"""The lifted (multiple-shooting) problem of the paper's eq. 1, with per-example states.

For segments ``f_0 .. f_L`` and training example ``i``:

.. math::
  \min_{w, h} \frac1N \sum_i \ell(f_L(h_{L-1}^{(i)}), y_i)
  \quad\text{s.t.}\quad g_l^{(i)} = h_l^{(i)} - f_l(h_{l-1}^{(i)}) = 0,\ h_{-1}^{(i)} = x_i

Each split ``l`` has a state table of shape ``(N_train, *state_shape)``. Where the state
lives is ``config.network.split_activation``:
  * ``"deferred"``: free states, the pre-activations at the split; the next segment
    applies the ReLU. Every entry of every state can move.
  * ``"relu"``: the activation-domain reparametrisation of the paper ("Activation
    Functions"), ``h = relu(\hat h)`` with ``\hat h`` the free variable. An entry of
    ``\hat h`` that is or becomes ``<= 0`` has zero gradient and never moves again (about
    half of them at initialisation).
  * ``"identity"``: the ReLU at the split is removed from the network (as DistProp does).
States start at a forward pass of the freshly initialised network, so every defect
starts at 0 (paper, "Initialize to a valid solution"); ``init_rows`` computes that pass
for any subset of the examples, so each process builds only its own shards of the tables.

Formulations, built with ``lagrangian_jax.formulations`` (the Lagrangian uses
per-example multipliers, a table like the states):
  * ``lagrangian``: ``mean_i [l_i + sum_l <lambda_l^(i), g_l^(i)>]`` -- ExtraProp with
    extragradient, GDA with descent-ascent;
  * ``augmented``: the same plus ``(c/2) mean_i sum_l |g_l^(i)|^2``;
  * ``penalty``: ``mean_i [l_i + (c/2) sum_l |g_l^(i)|^2]``, no multipliers
    ("Regularized" in the paper).

Eq. 3 (``config.lifted.band = eps > 0``): every formulation reads the epsilon-insensitive
constraint ``g_eps = shrink_eps(g)`` (``formulations.epsilon_insensitive``, soft or hard
as ``config.lifted.shrinkage``) in place of ``g``, the band ``|g| <= eps`` being feasible:
``<lambda, g_eps>`` in the Lagrangians, ``|g_eps|^2`` in the augmented and penalty terms,
and ``lambda += c g_eps`` in the method of multipliers (its ``g`` is the gradient of the
objective in ``lambda``). The defect this module reports (``defects``, the objective's
``"defect"``) stays the raw ``mean |g|``, the band not subtracted, so that rows with and
without a band measure the same thing. ``eps = 0`` uses ``g`` itself: not
``shrink_0(g)``, whose soft gradient vanishes at ``g = 0`` where every row starts.

Reductions are means over the batch (``reduction="batch_mean"``, documented in
``formulations``), and the state and multiplier rows are ``formulations.per_example_rows``:
a row's gradient is that of its own example's term, whatever the batch size. A step
reads and writes only the batch's rows of the tables (``step.py`` gathers them before
and scatters them after the solver step).
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lagrangian_jax import errors
from lagrangian_jax import formulations
from lagrangian_jax import networks
from lagrangian_jax.methods import base

FORMULATIONS = ("lagrangian", "augmented", "penalty")


class _Lifted(NamedTuple):
  """What the lifted problem's functions read: the network, the formulation and its c."""

  net: networks.SplitNetwork
  num_train: int
  formulation: str
  penalty: float  # c of the penalty / augmented term (config.penalty)
  reparam: Callable  # h = reparam(free state): relu for split_activation="relu"
  band: float = 0.0  # eq. 3's epsilon on g (config.lifted.band); 0: g itself
  shrinkage: str = "soft"  # config.lifted.shrinkage

  @property
  def num_splits(self) -> int:
    return len(self.net.state_shapes)

  @property
  def has_multipliers(self) -> bool:
    return self.formulation != "penalty"


def _checked_options(config, net, num_train, name: str, formulation: str) -> _Lifted:
  if formulation not in FORMULATIONS:
    raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}")
  num_splits = len(net.state_shapes)
  errors.require(num_splits > 0, "network.split", f"method {name!r} needs at least one split")
  penalty = float(config.penalty)
  if formulation == "augmented":  # its rule (config_rules) asks for >= 0 only
    errors.require(penalty > 0, "penalty", f"must be > 0 for {name}, got {penalty}")
  reparam = jax.nn.relu if config.network.split_activation == "relu" else (lambda h: h)
  lifted = config.get("lifted") or {}  # a config written before the section: no band
  band, shrinkage = float(lifted.get("band", 0.0)), lifted.get("shrinkage", "soft")
  return _Lifted(net, num_train, formulation, penalty, reparam, band, shrinkage)


def _assemble(p: _Lifted, weights, states, multipliers):
  return {
    "primal": {"weights": weights, "aux": {"states": states}},
    "dual": {"multipliers": multipliers} if p.has_multipliers else {},
  }


def _forward_states(p: _Lifted, weights, images):
  states = networks.segment_output(p.net, weights, images)[:-1]
  return tuple(jnp.asarray(s, jnp.float32) for s in states)


def _init(p: _Lifted, rng, map_train):
  weights = networks.init_network(p.net, rng)
  if map_train is None:  # state.build_experiment fills the tables shard by shard
    shapes = tuple(
      jax.ShapeDtypeStruct((p.num_train, *shape), jnp.float32) for shape in p.net.state_shapes
    )
    return _assemble(p, weights, shapes, shapes), {}
  states = map_train(lambda x, y: _forward_states(p, weights, x))
  for s, shape in zip(states, p.net.state_shapes):
    assert s.shape == (p.num_train, *shape), (s.shape, p.num_train, shape)
  return _assemble(p, weights, states, tuple(jnp.zeros_like(s) for s in states)), {}


def _init_rows(p: _Lifted, params, constants, images, labels):
  del constants, labels
  weights = params["primal"]["weights"]
  states = _forward_states(p, weights, images)
  return _assemble(p, weights, states, tuple(jnp.zeros_like(s) for s in states))


def _constraints(p: _Lifted, params, batch):
  w = params["primal"]["weights"]
  h = [p.reparam(s) for s in formulations.per_example_rows(params["primal"]["aux"]["states"])]
  inputs = [batch.images] + h[:-1]
  g = tuple(h[l] - networks.apply_segment(p.net, w, l, inputs[l]) for l in range(p.num_splits))
  return g, h


def banded(g, band: float, shrinkage: str = "soft"):
  r"""Eq. 3 on the lifted constraints: ``epsilon_insensitive(g, band, shrinkage)``, or
  ``g`` itself for ``band = 0`` (the arithmetic without a band, bit for bit).

  .. math::
    g_\epsilon = \operatorname{sign}(g)\max(|g| - \epsilon, 0) \ \text{(soft)},\qquad
    g\,[|g| > \epsilon] \ \text{(hard)}

  Example:
    >>> import jax.numpy as jnp
    >>> g = (jnp.array([[-1.0, 0.25, 0.75]]),)
    >>> [x.tolist() for x in banded(g, 0.5)]
    [[[-0.5, 0.0, 0.25]]]
    >>> [x.tolist() for x in banded(g, 0.5, "hard")], banded(g, 0.0) is g
    ([[[-1.0, 0.0, 0.75]]], True)
  """
  if band == 0:
    return g
  return formulations.epsilon_insensitive(g, band, shrinkage)


def _formulation_value(p: _Lifted, params, loss, g):
  """The formulation's objective from the loss and the constraints (module docstring);
  ``g`` is the raw constraint, banded here."""
  g = banded(g, p.band, p.shrinkage)
  if p.formulation == "penalty":
    return formulations.quadratic_penalty(loss, g, penalty=p.penalty, reduction="batch_mean")
  lams = formulations.per_example_rows(params["dual"]["multipliers"])
  if p.formulation == "augmented":
    return formulations.augmented_lagrangian(
      loss, g, lams, penalty=p.penalty, reduction="batch_mean"
    )
  return formulations.lagrangian(loss, g, lams, reduction="batch_mean")


def _objective(p: _Lifted, params, constants, batch):
  del constants
  g, h = _constraints(p, params, batch)
  logits = networks.apply_segment(p.net, params["primal"]["weights"], p.num_splits, h[-1])
  loss = base.cross_entropy(logits, batch.labels)
  value = _formulation_value(p, params, loss, g)
  return value, {"loss": loss, "defect": base.split_defects(g)}


def _defects(p: _Lifted, params, constants, batch):
  del constants
  g, _ = _constraints(p, params, batch)
  return base.split_defects(g)


def _placement(p: _Lifted, params, constants):  # the states (and multipliers) are tables
  where = base.replicated(params, constants)
  where.params["primal"]["aux"] = jax.tree.map(lambda _: base.ROWS, params["primal"]["aux"])
  if p.has_multipliers:
    where.params["dual"] = jax.tree.map(lambda _: base.ROWS, params["dual"])
  return where


def make(
  config,
  net: networks.SplitNetwork,
  num_train: int,
  *,
  name: str,
  formulation: str,
  default_solver: str,
) -> base.Method:
  p = _checked_options(config, net, num_train, name, formulation)
  return base.Method(
    name=name,
    default_solver=default_solver,
    init=functools.partial(_init, p),
    objective=functools.partial(_objective, p),
    placement=functools.partial(_placement, p),
    defects=functools.partial(_defects, p),
    init_rows=functools.partial(_init_rows, p),
  )
