"""Training methods: each a pure objective over pytrees plus its initialisation.

``METHODS`` is the one list of methods: the launcher's errors, the configs
(``configs/<name>.py``) and the tests derive from it.
"""

from __future__ import annotations

import functools

from lagrangian_jax import errors
from lagrangian_jax import networks
from lagrangian_jax.methods import backprop
from lagrangian_jax.methods import dfa
from lagrangian_jax.methods import distprop
from lagrangian_jax.methods import dtp
from lagrangian_jax.methods import lifted
from lagrangian_jax.methods import oam
from lagrangian_jax.methods.base import Batch
from lagrangian_jax.methods.base import Method

__all__ = ["METHODS", "Batch", "Method", "make_method"]

# name -> make(config, net, num_train) -> Method
METHODS = {
  "backprop": backprop.make,
  "penalty": functools.partial(
    lifted.make, name="penalty", formulation="penalty", default_solver="descent"
  ),
  "gda": functools.partial(lifted.make, name="gda", formulation="lagrangian", default_solver="gda"),
  "augmented_lagrangian": functools.partial(
    lifted.make, name="augmented_lagrangian", formulation="augmented", default_solver="multipliers"
  ),
  "extraprop": functools.partial(
    lifted.make, name="extraprop", formulation="lagrangian", default_solver="extragradient"
  ),
  "distprop": distprop.make,
  "dfa": dfa.make,
  "dtp": dtp.make,
  "oam": oam.make,
}


def make_method(config, net, num_train: int, mesh=None) -> Method:
  """The method named by ``config.method`` (a name ``config_rules`` checked); each method
  checks its own config section.

  On a ``mesh`` with more than one ``stage`` (or with ``config.distprop.block_layout``
  ``"stacked"`` or ``"slots"``), DistProp is the stage-parallel one
  (``distprop.for_mesh``); every other method needs ``mesh.stage=1``."""
  method = METHODS[config.method](config, net, num_train)
  errors.require(
    method.applies_dropout or not networks.has_dropout(net),
    "network.dropout",
    f"method {config.method!r} does not apply dropout (network.dropout must be 0)",
  )
  if config.method == "distprop":
    return distprop.for_mesh(config, net, method, mesh)
  stages = 1 if mesh is None else mesh.shape["stage"]
  errors.require(
    stages == 1,
    "mesh.stage",
    f"{stages} stages: only DistProp's blocks decouple (method {config.method!r} needs "
    "mesh.stage=1)",
  )
  return method
