r"""Direct feedback alignment (Nøkland 2016), as a surrogate objective for any optimizer.

Reference: A. Nøkland, *Direct Feedback Alignment Provides Learning in Deep Neural
Networks*, NeurIPS 2016 (arXiv:1609.01596).

For segments ``f_0 .. f_L`` (one per block with ``network.split="every"``) with outputs
``h_l = f_l(h_{l-1})``, ``h_{-1} = x``, the output error of example ``i`` is

.. math::
  e_i = \mathrm{softmax}(f_L(h_{L-1,i})) - \mathrm{onehot}(y_i) \in \mathbb R^C .

DFA sends it to every split through a fixed random matrix ``B_l`` of shape
``(C, |h_l|)`` (entries ``N(0, s^2 / C)``, ``s = config.dfa.feedback_scale``; drawn from
the run's rng at ``init``, kept in ``constants``, never trained), in place of the
backpropagated ``dL/dh_l``. The update of segment ``l < L`` is then the gradient of

.. math::
  S_l(w_l) = \frac1B \sum_i \big\langle \mathrm{sg}(e_i B_l),\ f_l(\mathrm{sg}(h_{l-1,i}); w_l)
  \big\rangle ,

``sg`` = ``stop_gradient``: for a dense segment ``h_l = relu(W_l h_{l-1} + b_l)`` this is
``dS_l/dW_l = (1/B) sum_i h_{l-1,i} [(e_i B_l) * relu'(a_{l,i})]^T``, Nøkland's
``delta a_l = (B_l e) * f'(a_l)`` times the block input; for a convolutional segment
``e B_l`` is reshaped to its output feature map and autograd supplies the transposed
convolution. The last segment learns from the loss on its stopped input, as in DFA (its
error is the true one). The objective is

.. math::
  \mathcal S(w) = \frac1B\sum_i \ell(f_L(\mathrm{sg}(h_{L-1,i})), y_i) + \sum_{l<L} S_l(w_l),

whose value is meaningless but whose gradient *is* the DFA update, so any optax step rule
(``config.optimizer``) and the ``descent`` solver apply it. No gradient crosses a segment
boundary. The per-split "defect" reported is the mean absolute feedback signal
``mean |e B_l|`` arriving at split ``l``: it goes to zero as the output error does.

``config.dfa.output_init``: ``"network"`` (the network's initialiser everywhere) or
``"zero"`` (the last segment starts at 0, as in Nøkland's zero-initialised networks: the
output weights then hold only what they learned from ``h_{L-1}``, which DFA drives along
``e B_{L-1}``, so they align with the feedback from the first steps). Hidden segments keep
their initialiser: a ReLU unit at 0 passes no signal (``relu'(0) = 0``).

Example:
  >>> import ml_collections
  >>> from lagrangian_jax import networks
  >>> from lagrangian_jax.methods import base
  >>> net = networks.build_network(
  ...     "mlp", depth=2, width=16, split="every", split_activation="relu")
  >>> config = ml_collections.ConfigDict({"dfa": {"feedback_scale": 1.0}})
  >>> method = make(config, net, num_train=8)
  >>> params, constants = method.init(jax.random.key(0), None)
  >>> batch = base.Batch(jnp.ones((4, 28, 28, 1)), jnp.arange(4), jnp.arange(4))
  >>> value, metrics = method.objective(params, constants, batch)
  >>> [b.shape for b in constants["feedback"]], metrics["defect"].shape
  ([(10, 16), (10, 16)], (2,))
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lagrangian_jax import config_rules
from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods import base

sg = jax.lax.stop_gradient


OUTPUT_INITS = ("network", "zero")


class _DFA(NamedTuple):
  """What DFA's functions read: the network and the options of ``config.dfa``."""

  net: networks.SplitNetwork
  scale: float  # B_l ~ N(0, scale^2 / num_classes)
  output_init: str  # network | zero


def _checked_options(config, net: networks.SplitNetwork) -> _DFA:
  config_rules.validate(config, "dfa")
  scale = config.dfa.feedback_scale
  output_init = config.dfa.get("output_init", "network")  # configs older than the key
  errors.require(
    len(net.state_shapes) > 0, "network.split", "method 'dfa' needs at least one split"
  )
  # DFA's update carries f'(a_l) of the block's own nonlinearity: a segment that opens
  # with the previous block's ReLU ("deferred") would drop it.
  errors.require(
    not any(seg.layers and isinstance(seg.layers[0], networks.ReLU) for seg in net.segments),
    "network.split_activation",
    "dfa sends the error to each block's output after its ReLU: use 'relu' (or 'identity')",
  )
  return _DFA(net, scale, output_init)


def _init(d: _DFA, rng, map_train):
  del map_train
  net, num_classes = d.net, d.net.num_classes
  k_w, k_b = jax.random.split(rng)
  weights = networks.init_network(net, k_w)
  if d.output_init == "zero":  # the last segment starts at 0 and learns aligned with B
    weights = (*weights[:-1], jax.tree.map(jnp.zeros_like, weights[-1]))
  feedback = tuple(
    jax.random.normal(jax.random.fold_in(k_b, l), (num_classes, math.prod(shape)), jnp.float32)
    * (d.scale / math.sqrt(num_classes))
    for l, shape in enumerate(net.state_shapes)
  )
  return {"primal": {"weights": weights}, "dual": {}}, {"feedback": feedback}


def _error_signals(d: _DFA, constants, logits, labels):
  e = jax.nn.softmax(logits.astype(jnp.float32)) - jax.nn.one_hot(labels, d.net.num_classes)
  e = sg(e)
  return [
    (e @ b).reshape((e.shape[0], *shape))
    for b, shape in zip(constants["feedback"], d.net.state_shapes)
  ]


def _defects_of(signals):
  return jnp.stack([jnp.mean(jnp.abs(x)) for x in signals])


def _objective(d: _DFA, params, constants, batch):
  hs, logits = base.detached_forward(d.net, params["primal"]["weights"], batch.images)
  loss = base.cross_entropy(logits, batch.labels)
  signals = _error_signals(d, constants, logits, batch.labels)
  size = batch.labels.shape[0]
  value = loss + sum(jnp.sum(x * h.astype(jnp.float32)) / size for x, h in zip(signals, hs))
  return value, {"loss": loss, "defect": _defects_of(signals)}


def _defects(d: _DFA, params, constants, batch):
  _, logits = base.detached_forward(d.net, params["primal"]["weights"], batch.images)
  return _defects_of(_error_signals(d, constants, logits, batch.labels))


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  del num_train
  d = _checked_options(config, net)
  return base.Method(
    name="dfa",
    default_solver="descent",
    init=functools.partial(_init, d),
    objective=functools.partial(_objective, d),
    defects=functools.partial(_defects, d),
  )
