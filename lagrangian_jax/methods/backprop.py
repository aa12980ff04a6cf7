"""Plain backpropagation: the unconstrained network and a cross-entropy loss.

The "SGD" row of the paper's Table 1; the reference every other method is timed against.
"""

from __future__ import annotations

import jax.numpy as jnp

from lagrangian_jax import networks
from lagrangian_jax.methods import base


def make(config, net: networks.SplitNetwork, num_train: int) -> base.Method:
  del config, num_train
  num_splits = len(net.state_shapes)

  def init(rng, map_train):
    del map_train
    weights = networks.init_network(net, rng)
    return {"primal": {"weights": weights}, "dual": {}}, base.dropout_constants(net, rng)

  def objective(params, constants, batch):
    rng = base.dropout_rng(constants, batch.step)
    logits = networks.forward(net, params["primal"]["weights"], batch.images, rng)
    loss = base.cross_entropy(logits, batch.labels)
    return loss, {"loss": loss}

  def defects(params, constants, batch):
    del params, constants, batch
    return jnp.zeros((num_splits,), jnp.float32)

  return base.Method(
    name="backprop",
    default_solver="descent",
    init=init,
    objective=objective,
    applies_dropout=True,
    defects=defects,
  )
