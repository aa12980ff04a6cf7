"""Training methods: each a pure objective over pytrees plus its initialisation."""

from __future__ import annotations

from lagrangian_jax.methods import backprop
from lagrangian_jax.methods import base
from lagrangian_jax.methods import distprop
from lagrangian_jax.methods import lifted
from lagrangian_jax.methods.base import Batch
from lagrangian_jax.methods.base import Method

METHODS = ("backprop", "penalty", "gda", "augmented_lagrangian", "extraprop", "distprop")


def make_method(config, net, num_train: int) -> Method:
  """The method named by ``config.method``."""
  name = config.method
  if name == "backprop":
    return backprop.make(config, net, num_train)
  if name == "distprop":
    return distprop.make(config, net, num_train)
  lifted_methods = {
      "extraprop": ("lagrangian", "extragradient"),
      "gda": ("lagrangian", "gda"),
      "augmented_lagrangian": ("augmented", "gda"),
      "penalty": ("penalty", "descent"),
  }
  if name in lifted_methods:
    formulation, solver = lifted_methods[name]
    return lifted.make(config, net, num_train, name=name, formulation=formulation,
                       default_solver=solver)
  raise base.ConfigError(f"config.method: unknown method {name!r}; choose one of {list(METHODS)}")
