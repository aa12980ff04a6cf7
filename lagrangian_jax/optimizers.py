"""User-facing saddle-point optimizers (the optax ``alias.py`` tier).

Each alias takes the primal learning rate first, an optional dual learning rate
(defaults to the primal one), and returns a ``GradientTransformationExtraArgs`` that
expects ``params = {'primal': ..., 'dual': ...}`` (keys configurable).
"""

from __future__ import annotations

from typing import Any

import optax

from lagrangian_jax import solvers

__all__ = ["gda", "extra_sgd", "extra_adagrad", "extra_adam", "past_extra_adagrad",
           "check_learning_rate"]


def check_learning_rate(value: Any, name: str) -> None:
  """Raises ``ValueError`` naming ``name`` for a negative (or NaN) constant rate.

  Schedules (callables) and traced values (as under ``optax.inject_hyperparams``)
  are not checked.
  """
  if isinstance(value, (int, float)) and not value >= 0:
    raise ValueError(f"{name} must be a non-negative number, got {value}")


def _rates(primal_learning_rate, dual_learning_rate):
  if dual_learning_rate is None:
    dual_learning_rate = primal_learning_rate
  check_learning_rate(primal_learning_rate, "primal_learning_rate")
  check_learning_rate(dual_learning_rate, "dual_learning_rate")
  return primal_learning_rate, dual_learning_rate


def _adagrad_descent_ascent(plr, dlr, initial_accumulator_value, eps, nonnegative,
                            primal_key, dual_key):
  return solvers.descent_ascent(
      optax.adagrad(plr, initial_accumulator_value=initial_accumulator_value, eps=eps),
      optax.adagrad(dlr, initial_accumulator_value=initial_accumulator_value, eps=eps),
      nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key)


def gda(primal_learning_rate: optax.ScalarOrSchedule,
        dual_learning_rate: optax.ScalarOrSchedule | None = None,
        *,
        nonnegative: Any = None,
        primal_key: str = "primal",
        dual_key: str = "dual") -> optax.GradientTransformationExtraArgs:
  r"""Simultaneous gradient descent-ascent (Arrow-Hurwicz-Uzawa).

  .. math::
    x_{k+1} = x_k - \alpha \nabla_x L, \qquad
    \lambda_{k+1} = \lambda_k + \beta \nabla_\lambda L

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.gda(0.1)
    >>> u, _ = tx.update(jax.grad(lambda p: p['primal'] * p['dual'])(params),
    ...                  tx.init(params), params)
    >>> jax.tree.map(lambda v: round(float(v), 6), u)
    {'dual': 0.1, 'primal': -0.1}
  """
  plr, dlr = _rates(primal_learning_rate, dual_learning_rate)
  return solvers.descent_ascent(optax.sgd(plr), optax.sgd(dlr), nonnegative=nonnegative,
                                primal_key=primal_key, dual_key=dual_key)


def extra_sgd(primal_learning_rate: optax.ScalarOrSchedule,
              dual_learning_rate: optax.ScalarOrSchedule | None = None,
              *,
              nonnegative: Any = None,
              primal_key: str = "primal",
              dual_key: str = "dual") -> optax.GradientTransformationExtraArgs:
  """Extragradient with plain SGD steps (paper eq. 2). Two ``update`` calls per iteration.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_sgd(0.1, 0.05)
  """
  return solvers.extragradient(gda(primal_learning_rate, dual_learning_rate,
                                   nonnegative=nonnegative, primal_key=primal_key,
                                   dual_key=dual_key))


def extra_adagrad(primal_learning_rate: optax.ScalarOrSchedule,
                  dual_learning_rate: optax.ScalarOrSchedule | None = None,
                  *,
                  initial_accumulator_value: float = 0.1,
                  eps: float = 1e-7,
                  accumulate: str = "both",
                  nonnegative: Any = None,
                  primal_key: str = "primal",
                  dual_key: str = "dual") -> optax.GradientTransformationExtraArgs:
  r"""ExtraAdagrad: extragradient whose steps are Adagrad steps, on primal and dual.

  Adagrad's accumulator ``G`` is updated at both half-steps by default, as Extra-Adam
  of Gidel et al. (2019) does with its moments:

  .. math::
    G \leftarrow G + g(x_t)^2,\ x_{t+1/2} = x_t - \eta\, g(x_t)/\sqrt{G+\epsilon};\quad
    G \leftarrow G + g(x_{t+1/2})^2,\ x_{t+1} = x_t - \eta\, g(x_{t+1/2})/\sqrt{G+\epsilon}

  (ascent on the multipliers). ``accumulate="update"`` adds only the second gradient.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_adagrad(0.1, 0.01)
  """
  inner = _adagrad_descent_ascent(*_rates(primal_learning_rate, dual_learning_rate),
                                  initial_accumulator_value, eps, nonnegative, primal_key,
                                  dual_key)
  return solvers.extragradient(inner, accumulate=accumulate)


def extra_adam(primal_learning_rate: optax.ScalarOrSchedule,
               dual_learning_rate: optax.ScalarOrSchedule | None = None,
               *,
               b1: float = 0.9,
               b2: float = 0.999,
               eps: float = 1e-8,
               accumulate: str = "both",
               nonnegative: Any = None,
               primal_key: str = "primal",
               dual_key: str = "dual") -> optax.GradientTransformationExtraArgs:
  """Extra-Adam (Gidel et al. 2019, Alg. 4): moments advance at both half-steps.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_adam(1e-3)
  """
  plr, dlr = _rates(primal_learning_rate, dual_learning_rate)
  inner = solvers.descent_ascent(optax.adam(plr, b1=b1, b2=b2, eps=eps),
                                 optax.adam(dlr, b1=b1, b2=b2, eps=eps),
                                 nonnegative=nonnegative, primal_key=primal_key,
                                 dual_key=dual_key)
  return solvers.extragradient(inner, accumulate=accumulate)


def past_extra_adagrad(primal_learning_rate: optax.ScalarOrSchedule,
                       dual_learning_rate: optax.ScalarOrSchedule | None = None,
                       *,
                       initial_accumulator_value: float = 0.1,
                       eps: float = 1e-7,
                       accumulate: str = "both",
                       nonnegative: Any = None,
                       primal_key: str = "primal",
                       dual_key: str = "dual") -> optax.GradientTransformationExtraArgs:
  """Extrapolation from the past with Adagrad steps: one gradient per iteration.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.past_extra_adagrad(0.1, 0.01)
  """
  inner = _adagrad_descent_ascent(*_rates(primal_learning_rate, dual_learning_rate),
                                  initial_accumulator_value, eps, nonnegative, primal_key,
                                  dual_key)
  return solvers.past_extragradient(inner, accumulate=accumulate)
