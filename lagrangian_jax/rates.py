r"""Proxy constraints and classification rates.

A rate constraint (a false-positive rate, a recall, a demographic-parity gap) counts
examples, ``1[s > 0]`` for a score ``s``: its gradient is zero almost everywhere. The
proxy-Lagrangian (Cotter et al., 2019; TFCO, Cooper) keeps two values per constraint:

  * the *true* value, which the multiplier sees: ``dL/dmu = h_true`` exactly;
  * a differentiable *surrogate*, whose gradient drives the model.

:func:`proxy` is that pair as one array, built with ``stop_gradient``:

.. math::
  \operatorname{proxy}(t, s) = \operatorname{sg}(t) + \big(s - \operatorname{sg}(s)\big)

Its value is ``t`` exactly (``s - s = 0`` exactly for finite ``s``) and its derivative is
``ds``, so ``<mu, proxy(t, s)>`` has gradient ``t`` in ``mu`` and ``mu ds`` in the model.

Every rate below returns such a proxy: the true (counting) rate as the value, the rate
with ``1[s > 0]`` replaced by a surrogate as the gradient. Surrogates of the indicator:
``"hinge"`` ``max(0, 1 + s)`` (an upper bound, TFCO's default), ``"sigmoid"``
``sigmoid(s)``. Rates are weighted means over examples, ``weights`` (default ones)
selecting or weighting them; a group's rate uses ``weights * group_mask``.

Example (demographic parity: the positive prediction rates of two groups):
  >>> import jax, jax.numpy as jnp
  >>> scores = jnp.array([2.0, -1.0, 0.5, -3.0])
  >>> group = jnp.array([1.0, 1.0, 0.0, 0.0])
  >>> gap = group_difference(positive_prediction_rate, scores, groups=(group, 1 - group))
  >>> float(gap)                        # 1/2 - 1/2: the true gap
  0.0
  >>> grad = jax.grad(lambda s: group_difference(
  ...   positive_prediction_rate, s, groups=(group, 1 - group), surrogate="sigmoid"))(scores)
  >>> bool(grad[0] > 0 and grad[2] < 0)  # the surrogate's gradient
  True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

__all__ = [
  "SURROGATES",
  "false_positive_rate",
  "group_difference",
  "indicator",
  "positive_prediction_rate",
  "precision",
  "proxy",
  "recall",
  "true_positive_rate",
]

SURROGATES = ("hinge", "sigmoid")


def proxy(true: PyTree, surrogate: PyTree) -> PyTree:
  r"""``true``'s value with ``surrogate``'s gradient, leaf-wise (module docstring).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> f = lambda x: proxy(jnp.round(x), jnp.tanh(x))    # round has no gradient
    >>> float(f(0.7)), float(jax.grad(f)(0.7)) == float(jax.grad(jnp.tanh)(0.7))
    (1.0, True)
  """
  jax.tree.map(_check_same_shape, true, surrogate)
  sg = jax.lax.stop_gradient
  return jax.tree.map(
    lambda t, s: sg(t) + (s - sg(s)).astype(jnp.result_type(t, s)), true, surrogate
  )


def _check_same_shape(t, s) -> None:
  if jnp.shape(t) != jnp.shape(s):
    raise ValueError(
      f"proxy: the true value has shape {jnp.shape(t)} but the surrogate {jnp.shape(s)}"
    )


def indicator(scores: jax.Array, surrogate: str = "hinge") -> jax.Array:
  """The surrogate of ``1[scores > 0]``: ``max(0, 1 + s)`` or ``sigmoid(s)``.

  Example:
    >>> import jax.numpy as jnp
    >>> indicator(jnp.array([-2.0, 0.0, 1.0])).tolist()
    [0.0, 1.0, 2.0]
  """
  if surrogate == "hinge":
    return jnp.maximum(0.0, 1.0 + scores)
  if surrogate == "sigmoid":
    return jax.nn.sigmoid(scores)
  raise ValueError(f"rates: surrogate must be one of {SURROGATES}, got {surrogate!r}")


def _weighted_mean(x: jax.Array, weights: jax.Array) -> jax.Array:
  total = jnp.sum(weights)
  return jnp.sum(weights * x) / jnp.where(total > 0, total, 1.0)


def _weights(scores: jax.Array, weights) -> jax.Array:
  if weights is None:
    return jnp.ones_like(scores)
  return jnp.broadcast_to(jnp.asarray(weights, scores.dtype), scores.shape)


def positive_prediction_rate(
  scores: jax.Array, weights: jax.Array | None = None, *, surrogate: str = "hinge"
) -> jax.Array:
  r"""``sum_i w_i 1[s_i > 0] / sum_i w_i``, as a :func:`proxy` (surrogate gradient).

  Example:
    >>> import jax.numpy as jnp
    >>> float(positive_prediction_rate(jnp.array([1.0, -1.0, 2.0, -0.5])))
    0.5
  """
  w = _weights(scores, weights)
  true = _weighted_mean((scores > 0).astype(scores.dtype), w)
  return proxy(true, _weighted_mean(indicator(scores, surrogate), w))


def false_positive_rate(
  scores: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  *,
  surrogate: str = "hinge",
) -> jax.Array:
  r"""The positive prediction rate among negatives (``labels == 0``), as a proxy.

  Example:
    >>> import jax.numpy as jnp
    >>> float(false_positive_rate(jnp.array([1.0, -1.0, 2.0, -0.5]), jnp.array([0, 0, 1, 1])))
    0.5
  """
  negative = 1.0 - jnp.asarray(labels, scores.dtype)
  return positive_prediction_rate(scores, _weights(scores, weights) * negative, surrogate=surrogate)


def true_positive_rate(
  scores: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  *,
  surrogate: str = "hinge",
) -> jax.Array:
  r"""The positive prediction rate among positives (``labels == 1``): the recall.

  Example:
    >>> import jax.numpy as jnp
    >>> float(true_positive_rate(jnp.array([1.0, -1.0, 2.0, -0.5]), jnp.array([0, 0, 1, 1])))
    0.5
  """
  positive = jnp.asarray(labels, scores.dtype)
  return positive_prediction_rate(scores, _weights(scores, weights) * positive, surrogate=surrogate)


recall = true_positive_rate


def precision(
  scores: jax.Array,
  labels: jax.Array,
  weights: jax.Array | None = None,
  *,
  surrogate: str = "hinge",
) -> jax.Array:
  r"""``sum w y 1[s > 0] / sum w 1[s > 0]`` (0 with no positive prediction), as a proxy.

  The surrogate is the same ratio with the indicator's surrogate in both sums.

  Example:
    >>> import jax.numpy as jnp
    >>> float(precision(jnp.array([1.0, -1.0, 2.0, -0.5]), jnp.array([0, 0, 1, 1])))
    0.5
  """
  w = _weights(scores, weights)
  y = jnp.asarray(labels, scores.dtype)

  def ratio(positive):
    predicted = jnp.sum(w * positive)
    return jnp.sum(w * y * positive) / jnp.where(predicted > 0, predicted, 1.0)

  return proxy(ratio((scores > 0).astype(scores.dtype)), ratio(indicator(scores, surrogate)))


def group_difference(
  rate: Callable[..., jax.Array],
  scores: jax.Array,
  *args: Any,
  groups: tuple[jax.Array, jax.Array],
  weights: jax.Array | None = None,
  **kwargs: Any,
) -> jax.Array:
  r"""``rate`` over group ``a`` minus ``rate`` over group ``b``: a proxy of the gap.

  ``groups = (mask_a, mask_b)`` are per-example masks (or weights) multiplying
  ``weights``; ``args`` / ``kwargs`` go to ``rate`` (labels, ``surrogate=``). A
  demographic-parity constraint ``|gap| <= eps`` is the two inequalities
  ``gap - eps <= 0`` and ``-gap - eps <= 0``.

  Example:
    >>> import jax.numpy as jnp
    >>> s, y = jnp.array([1.0, -1.0, 2.0, 3.0]), jnp.array([0, 0, 0, 1])
    >>> a = jnp.array([1.0, 1.0, 0.0, 0.0])
    >>> float(group_difference(false_positive_rate, s, y, groups=(a, 1 - a)))  # 1/2 - 1
    -0.5
  """
  group_a, group_b = groups
  w = _weights(scores, weights)
  return rate(scores, *args, w * group_a, **kwargs) - rate(scores, *args, w * group_b, **kwargs)
