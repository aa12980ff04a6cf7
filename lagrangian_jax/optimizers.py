"""User-facing saddle-point optimizers (the optax ``alias.py`` tier).

Every optimizer here is one call of :func:`saddle_point`: a solver (``extragradient``,
``past_extragradient``, ``gda`` or ``descent``) around a step rule (``adagrad``, ``sgd``
or ``adam``) applied to ``params = {'primal': ..., 'dual': ...}`` (keys configurable).
The primal learning rate may be one number (or schedule) or a mapping from group
names to rates, with ``primal_labels`` naming each primal leaf's group, as in
``optax.multi_transform``: weights, states or prototypes, and scales can then move at
their own rates. The multipliers may take their own step rule (``dual_step_rule``: plain
SGD, say, beside an Adagrad primal, as the authors' GDA did); by default they take the
primal's. Each default (Adagrad's initial accumulator and epsilon, Adam's betas) is set
once, in this module's constants.

:func:`from_config` builds the optimizer of a training config (``config.solver``,
``config.optimizer``, ``config.learning_rates``...) and is the one place those keys are
checked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lagrangian_jax import errors
from lagrangian_jax import fresh_rows
from lagrangian_jax import solvers

__all__ = [
  "DUAL_RULES",
  "SOLVERS",
  "STEP_RULES",
  "SaddleOptions",
  "StepRule",
  "check_learning_rate",
  "extra_adagrad",
  "extra_adam",
  "extra_sgd",
  "from_config",
  "gda",
  "past_extra_adagrad",
  "saddle_point",
  "step_schedule",
]

# "past_extragradient_{fresh,plain}_rows": an experiment's solvers (lagrangian_jax/fresh_rows.py)
SOLVERS = (
  "extragradient",
  "past_extragradient",
  "gda",
  "descent",
  "multipliers",
  "past_extragradient_fresh_rows",
  "past_extragradient_plain_rows",
)
# the primal group of the lifted methods' per-example rows (states; their multipliers
# are the dual): the rows "past_extragradient_fresh_rows" extrapolates afresh
ROW_GROUP = "aux"
STEP_RULES = ("adagrad", "sgd", "adam")
# the multipliers' step rule: "primal" (the primal's rule, with its hyper-parameters) or
# one of STEP_RULES (``config.dual_optimizer``, :func:`dual_rule_from_config`)
DUAL_RULES = ("primal", *STEP_RULES)

# The defaults, each written once.
ADAGRAD_INITIAL_ACCUMULATOR = 0.1
ADAGRAD_EPS = 1e-7
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8

Rate = optax.ScalarOrSchedule
Rates = Rate | Mapping[str, Rate]


def check_learning_rate(value: Any, name: str) -> None:
  """Raises ``ValueError`` naming ``name`` for a negative (or NaN) constant rate.

  Schedules (callables) and traced values (as under ``optax.inject_hyperparams``)
  are not checked.
  """
  if isinstance(value, (int, float)) and not value >= 0:
    raise ValueError(f"{name} must be a non-negative number, got {value}")


class StepRule(NamedTuple):
  """The step rule ``T`` of both players: ``optax.<name>`` with its hyper-parameters.

  ``initial_accumulator_value`` and ``eps`` are Adagrad's (``eps`` also Adam's; ``None``:
  the rule's default), ``momentum`` SGD's (``None`` or 0: none), ``b1`` and ``b2`` Adam's.

  Example:
    >>> rule = StepRule("adagrad", initial_accumulator_value=0.01)
    >>> tx = rule(0.1)  # optax.adagrad(0.1, initial_accumulator_value=0.01, eps=1e-7)
  """

  name: str
  initial_accumulator_value: float = ADAGRAD_INITIAL_ACCUMULATOR
  eps: float | None = None
  momentum: float | None = None
  b1: float = ADAM_B1
  b2: float = ADAM_B2

  def __call__(self, learning_rate: Rate) -> optax.GradientTransformation:
    """``optax.<name>(learning_rate, ...)``; ``ValueError`` for a name not in STEP_RULES."""
    if self.name == "adagrad":
      return optax.adagrad(
        learning_rate,
        initial_accumulator_value=self.initial_accumulator_value,
        eps=ADAGRAD_EPS if self.eps is None else self.eps,
      )
    if self.name == "adam":
      eps = ADAM_EPS if self.eps is None else self.eps
      return optax.adam(learning_rate, b1=self.b1, b2=self.b2, eps=eps)
    if self.name == "sgd":
      return optax.sgd(learning_rate, momentum=self.momentum or None)
    raise ValueError(f"step_rule must be one of {STEP_RULES}, got {self.name!r}")


class SaddleOptions(NamedTuple):
  """How :func:`saddle_point` combines the two players' steps (defaults: none of it).

  Attributes:
    accumulate: the extragradients' ``accumulate`` (``"both"``: ExtraAdagrad).
    clip_norm: ``> 0`` clips the global norm of every gradient the solver uses first.
    clip_weights: how many times each entry counts in that norm
      (:func:`clip_by_global_norm`; ``None``: once), a pytree like ``params``.
    penalty, multiplier_every: the method of multipliers' ``c`` (or schedule) and how
      often it updates the multipliers (``"multipliers"`` only).
    nonnegative: which multipliers are inequality multipliers (``descent_ascent``).
    primal_key, dual_key: the two keys of ``params``.
  """

  accumulate: str = "both"
  clip_norm: float = 0.0
  clip_weights: Any = None
  penalty: Rate = 1.0
  multiplier_every: int = 1
  nonnegative: Any = None
  primal_key: str = "primal"
  dual_key: str = "dual"


def _per_group(
  rule: Callable[[Rate], optax.GradientTransformation], rates: Rates, labels: Any, what: str
) -> optax.GradientTransformation:
  """``rule(rate)``, or one ``rule(rate_k)`` per labelled group of leaves."""
  if not isinstance(rates, Mapping):
    check_learning_rate(rates, what)
    return rule(rates)
  if labels is None:
    raise ValueError(
      f"{what} is a mapping of group rates {sorted(rates)}: pass "
      "primal_labels naming each primal leaf's group"
    )
  for group, rate in rates.items():
    check_learning_rate(rate, f"{what}[{group!r}]")
  return optax.multi_transform({group: rule(rate) for group, rate in rates.items()}, labels)


def clip_by_global_norm(max_norm: float, weights: Any = None) -> optax.GradientTransformation:
  r"""``optax.clip_by_global_norm`` with each entry counted ``weights`` times in the norm.

  .. math::
    \|g\|_w = \Big(\sum_i w_i g_i^2\Big)^{1/2}, \qquad
    g \leftarrow g \cdot \min(1, \text{max\_norm} / \|g\|_w)

  ``weights`` is a pytree like the updates whose leaves broadcast to theirs (``None``:
  plain ``optax.clip_by_global_norm``). A parameter held twice, e.g. a prototype and its
  copy on the next stage (``methods.distprop.stage_parallel``), counts once when one of the two
  has weight 0, so the clip scales the step as it would without the copy.

  Example:
    >>> import jax.numpy as jnp
    >>> g = {'a': jnp.array([3.0, 3.0]), 'b': jnp.array(4.0)}
    >>> tx = clip_by_global_norm(2.5, {'a': jnp.array([1.0, 0.0]), 'b': 1.0})
    >>> u, _ = tx.update(g, tx.init(g))  # |g|_w = 5: halved
    >>> [float(x) for x in u['a']], float(u['b'])
    ([1.5, 1.5], 2.0)
  """
  if weights is None:
    return optax.clip_by_global_norm(max_norm)

  def update_fn(updates, state, params=None):
    del params
    squares = jax.tree.map(lambda u, w: jnp.sum(w * jnp.square(u)), updates, weights)
    g_norm = jnp.sqrt(sum(jax.tree.leaves(squares)))
    trigger = g_norm < max_norm
    # the same arithmetic as optax's, so weights of 1 give its iterates bit for bit
    updates = jax.tree.map(
      lambda t: jax.lax.select(trigger, t, (t / g_norm.astype(t.dtype)) * max_norm), updates
    )
    return updates, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def saddle_point(
  solver: str,
  step_rule: str | StepRule,
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  primal_labels: Any = None,
  options: SaddleOptions = SaddleOptions(),
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""A saddle-point optimizer: ``solver`` around ``step_rule`` steps, primal and dual.

  .. math::
    u_x = T_x(\nabla_x L), \qquad u_\lambda = T_\lambda(-\nabla_\lambda L)

  with ``T_x = step_rule`` and ``T_lambda = dual_step_rule`` (the same rule by default)

  inside the solver: ``"gda"`` applies them as they are (simultaneous descent-ascent),
  ``"descent"`` freezes the multipliers (``T_lambda = 0``: plain minimisation, for
  penalty methods and backprop), ``"extragradient"`` and ``"past_extragradient"`` wrap
  them in :func:`~lagrangian_jax.extragradient` / :func:`~lagrangian_jax.past_extragradient`,
  ``"past_extragradient_fresh_rows"`` is Popov's for the weights and extragradient for the
  rows, ``"past_extragradient_plain_rows"`` Popov's for the weights and plain steps for the
  rows (``lagrangian_jax/fresh_rows.py``; the rows: ``primal_labels``' group
  :data:`ROW_GROUP` and the multipliers),
  and ``"multipliers"`` is :func:`~lagrangian_jax.method_of_multipliers`: the primal step,
  then ``lambda + c g`` (no dual step rule; ``dual_learning_rate`` is not used).

  Args:
    solver: one of :data:`SOLVERS`.
    step_rule: ``T``: a name of :data:`STEP_RULES` (its defaults) or a :class:`StepRule`.
    primal_learning_rate: a rate or schedule, or a mapping ``{group: rate}``.
    dual_learning_rate: the multipliers' rate (default: the primal rate, which must then
      be a single rate).
    primal_labels: with group rates: a pytree (prefix) of group names like the primal
      params, or a callable ``primal -> labels`` (``optax.multi_transform``).
    options: clipping, the extragradients' accumulator, the method of multipliers' ``c``,
      inequality multipliers and the params' keys (:class:`SaddleOptions`).
    dual_step_rule: ``T_lambda``, a name of :data:`STEP_RULES` or a :class:`StepRule`
      (``None``: ``step_rule``, today's default). ``"descent"`` never steps the
      multipliers and ignores it; ``"multipliers"`` steps them by ``lambda + c g`` and
      refuses one (``ValueError``).

  Returns:
    A ``GradientTransformationExtraArgs`` that accepts ``grad_fn`` (one call per
    iteration, :func:`~lagrangian_jax.solver_step`).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> params = {'primal': {'w': jnp.array(1.), 'h': jnp.array(1.)}, 'dual': jnp.array(0.)}
    >>> tx = lj.saddle_point('gda', 'sgd', {'weights': 0.1, 'states': 0.5}, 0.1,
    ...                      primal_labels={'w': 'weights', 'h': 'states'})
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> jax.tree.map(lambda u: round(float(u), 6), updates)
    {'dual': 0.1, 'primal': {'h': -0.5, 'w': -0.1}}
  """
  if solver not in SOLVERS:
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
  if dual_learning_rate is None:
    if isinstance(primal_learning_rate, Mapping):
      raise ValueError(
        "dual_learning_rate is needed when primal_learning_rate is a mapping of group rates"
      )
    dual_learning_rate = primal_learning_rate
  rule = _as_rule(step_rule)
  primal = _per_group(rule, primal_learning_rate, primal_labels, "primal_learning_rate")
  if solver == "multipliers":
    if dual_step_rule is not None:
      raise ValueError("the method of multipliers steps lambda += c g: it takes no dual_step_rule")
    return _multipliers(primal, options)
  check_learning_rate(dual_learning_rate, "dual_learning_rate")
  dual_rule = rule if dual_step_rule is None else _as_rule(dual_step_rule)
  dual = optax.set_to_zero() if solver == "descent" else dual_rule(dual_learning_rate)
  inner = solvers.descent_ascent(
    primal,
    dual,
    nonnegative=options.nonnegative,
    primal_key=options.primal_key,
    dual_key=options.dual_key,
  )
  if options.clip_norm > 0:
    inner = optax.chain(clip_by_global_norm(options.clip_norm, options.clip_weights), inner)
  if solver == "extragradient":
    return solvers.extragradient(inner, accumulate=options.accumulate)
  if solver == "past_extragradient":
    return solvers.past_extragradient(inner, accumulate=options.accumulate)
  if solver in ("past_extragradient_fresh_rows", "past_extragradient_plain_rows"):
    return fresh_rows.past_extragradient_fresh_rows(
      inner,
      _row_mask(primal_labels, options),
      accumulate=options.accumulate,
      fresh=solver == "past_extragradient_fresh_rows",
    )
  return optax.with_extra_args_support(inner)


def _row_mask(primal_labels: Any, options: SaddleOptions) -> dict:
  """Which params are per-example rows: the primal group :data:`ROW_GROUP` and the dual."""
  if primal_labels is None or callable(primal_labels):
    raise ValueError(
      f"past_extragradient_fresh_rows needs primal_labels (a pytree) naming the rows' group "
      f"{ROW_GROUP!r}"
    )
  primal = jax.tree.map(lambda label: label == ROW_GROUP, primal_labels)
  return {options.primal_key: primal, options.dual_key: True}


def _as_rule(rule: str | StepRule) -> StepRule:
  """A name of :data:`STEP_RULES` with its defaults, or the :class:`StepRule` itself."""
  return StepRule(rule) if isinstance(rule, str) else rule


def _multipliers(
  primal: optax.GradientTransformation, options: SaddleOptions
) -> optax.GradientTransformationExtraArgs:
  """The method of multipliers around the primal step (clipped first, when asked)."""
  if options.nonnegative is not None:
    raise ValueError("the method of multipliers here handles equality multipliers only")
  if options.clip_norm > 0:  # the multipliers take no gradient step: clip the primal one
    weights = None if options.clip_weights is None else options.clip_weights[options.primal_key]
    primal = optax.chain(clip_by_global_norm(options.clip_norm, weights), primal)
  return solvers.method_of_multipliers(
    primal,
    penalty=options.penalty,
    every=options.multiplier_every,
    primal_key=options.primal_key,
    dual_key=options.dual_key,
  )


def gda(
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  momentum: float | None = None,
  primal_labels: Any = None,
  nonnegative: Any = None,
  primal_key: str = "primal",
  dual_key: str = "dual",
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Simultaneous gradient descent-ascent (Arrow-Hurwicz-Uzawa), SGD steps.

  .. math::
    x_{k+1} = x_k - \alpha \nabla_x L, \qquad
    \lambda_{k+1} = \lambda_k + \beta \nabla_\lambda L

  Keyword arguments: see :func:`saddle_point`, :class:`StepRule` and :class:`SaddleOptions`;
  ``dual_step_rule`` (every alias here has it) gives the multipliers their own rule.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import lagrangian_jax as lj
    >>> params = {'primal': jnp.array(1.), 'dual': jnp.array(1.)}
    >>> tx = lj.gda(0.1)
    >>> u, _ = tx.update(jax.grad(lambda p: p['primal'] * p['dual'])(params),
    ...                  tx.init(params), params)
    >>> jax.tree.map(lambda v: round(float(v), 6), u)
    {'dual': 0.1, 'primal': -0.1}

  The authors' GDA (Adagrad primal from a zero accumulator, plain SGD dual):

    >>> from lagrangian_jax.optimizers import StepRule
    >>> tx = lj.saddle_point('gda', StepRule('adagrad', initial_accumulator_value=0.0),
    ...                      0.1, 1.39e-4, dual_step_rule='sgd')
    >>> u, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
    >>> jax.tree.map(lambda v: round(float(v), 6), u)
    {'dual': 0.000139, 'primal': -0.1}
  """
  return saddle_point(
    "gda",
    StepRule("sgd", momentum=momentum),
    primal_learning_rate,
    dual_learning_rate,
    primal_labels=primal_labels,
    dual_step_rule=dual_step_rule,
    options=SaddleOptions(nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key),
  )


def extra_sgd(
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  momentum: float | None = None,
  primal_labels: Any = None,
  nonnegative: Any = None,
  primal_key: str = "primal",
  dual_key: str = "dual",
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Extragradient with plain SGD steps (the paper's eq. 2).

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_sgd(0.1, 0.05)
  """
  return saddle_point(
    "extragradient",
    StepRule("sgd", momentum=momentum),
    primal_learning_rate,
    dual_learning_rate,
    primal_labels=primal_labels,
    dual_step_rule=dual_step_rule,
    options=SaddleOptions(nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key),
  )


def extra_adagrad(
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  initial_accumulator_value: float = ADAGRAD_INITIAL_ACCUMULATOR,
  eps: float = ADAGRAD_EPS,
  accumulate: str = "both",
  primal_labels: Any = None,
  nonnegative: Any = None,
  primal_key: str = "primal",
  dual_key: str = "dual",
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""ExtraAdagrad (the paper's Section 3.1): extragradient whose steps are Adagrad steps.

  Adagrad's accumulator ``G`` is updated at both half-steps by default, as Extra-Adam
  of Gidel et al. (2019) does with its moments:

  .. math::
    G \leftarrow G + g(x_t)^2,\ x_{t+1/2} = x_t - \eta\, g(x_t)/\sqrt{G+\epsilon};\quad
    G \leftarrow G + g(x_{t+1/2})^2,\ x_{t+1} = x_t - \eta\, g(x_{t+1/2})/\sqrt{G+\epsilon}

  (ascent on the multipliers). ``accumulate="update"`` adds only the second gradient.
  Keyword arguments: see :func:`saddle_point`, :class:`StepRule` and :class:`SaddleOptions`.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_adagrad({'weights': 0.01, 'states': 0.1}, 0.01,
    ...                       primal_labels={'w': 'weights', 'h': 'states'})
  """
  return saddle_point(
    "extragradient",
    StepRule("adagrad", initial_accumulator_value=initial_accumulator_value, eps=eps),
    primal_learning_rate,
    dual_learning_rate,
    primal_labels=primal_labels,
    dual_step_rule=dual_step_rule,
    options=SaddleOptions(
      accumulate=accumulate, nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key
    ),
  )


def extra_adam(
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  b1: float = ADAM_B1,
  b2: float = ADAM_B2,
  eps: float = ADAM_EPS,
  accumulate: str = "both",
  primal_labels: Any = None,
  nonnegative: Any = None,
  primal_key: str = "primal",
  dual_key: str = "dual",
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Extra-Adam (Gidel et al. 2019, Alg. 4): moments advance at both half-steps.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.extra_adam(1e-3)
  """
  return saddle_point(
    "extragradient",
    StepRule("adam", eps=eps, b1=b1, b2=b2),
    primal_learning_rate,
    dual_learning_rate,
    primal_labels=primal_labels,
    dual_step_rule=dual_step_rule,
    options=SaddleOptions(
      accumulate=accumulate, nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key
    ),
  )


def past_extra_adagrad(
  primal_learning_rate: Rates,
  dual_learning_rate: Rate | None = None,
  *,
  initial_accumulator_value: float = ADAGRAD_INITIAL_ACCUMULATOR,
  eps: float = ADAGRAD_EPS,
  accumulate: str = "both",
  primal_labels: Any = None,
  nonnegative: Any = None,
  primal_key: str = "primal",
  dual_key: str = "dual",
  dual_step_rule: str | StepRule | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Extrapolation from the past with Adagrad steps: one gradient per iteration.

  Example:
    >>> import lagrangian_jax as lj
    >>> tx = lj.past_extra_adagrad(0.1, 0.01)
  """
  return saddle_point(
    "past_extragradient",
    StepRule("adagrad", initial_accumulator_value=initial_accumulator_value, eps=eps),
    primal_learning_rate,
    dual_learning_rate,
    primal_labels=primal_labels,
    dual_step_rule=dual_step_rule,
    options=SaddleOptions(
      accumulate=accumulate, nonnegative=nonnegative, primal_key=primal_key, dual_key=dual_key
    ),
  )


LR_SCHEDULES = ("constant", "step")


def step_schedule(rate: float, every: int, factor: float) -> optax.Schedule:
  """``rate * factor ** floor(count / every)``: steps down every ``every`` counts.

  >>> s = step_schedule(0.1, every=3, factor=0.1)
  >>> [round(float(s(c)), 6) for c in (0, 2, 3, 6)]
  [0.1, 0.1, 0.01, 0.001]
  """
  return optax.exponential_decay(rate, transition_steps=every, decay_rate=factor, staircase=True)


def _schedules(config, solver: str, steps_per_epoch: float | None):
  """``rate -> rate or schedule`` for ``config.lr_schedule``.

  ``kind="step"``: every learning rate (all primal groups and the multipliers') is
  multiplied by ``factor`` every ``every_epochs`` epochs, e.g. AlexNet's /10 every 30
  epochs. Optax schedules count the inner transformation's updates: two per iteration
  for the extragradient solvers with ``accumulate="both"`` (both half-steps advance the
  state), one otherwise; the period is converted so that it is in iterations.
  """
  sched = config.get("lr_schedule")
  if sched is None:  # a config written before schedules existed
    return lambda rate: rate
  if sched.kind == "constant":
    return lambda rate: rate
  errors.require(
    steps_per_epoch is not None and steps_per_epoch > 0,
    "lr_schedule.kind",
    "'step' needs the training set's steps per epoch (from_config(steps_per_epoch=...))",
  )
  two = ("extragradient", "past_extragradient", "past_extragradient_fresh_rows")
  two += ("past_extragradient_plain_rows",)
  half_steps = 2 if solver in two else 1
  if config.accumulate != "both":
    half_steps = 1
  every = max(1, int(round(sched.every_epochs * steps_per_epoch))) * half_steps
  return lambda rate: step_schedule(rate, every, sched.factor)


def dual_rule_from_config(config, solver: str) -> StepRule | None:
  """The multipliers' step rule of a config: ``None`` (the primal's) or a :class:`StepRule`.

  ``config.dual_optimizer`` (:data:`DUAL_RULES`; a config without the key: ``"primal"``):
  ``"primal"`` is the primal's rule with its hyper-parameters, the default and the only
  arithmetic before the key existed; ``"sgd"`` is plain SGD (no momentum:
  ``config.momentum`` is the primal's), ``"adagrad"`` starts its accumulator at
  ``config.dual_adagrad_init``, ``"adam"`` takes this module's defaults. The method of
  multipliers has no dual step to choose: ``solver="multipliers"`` needs ``"primal"``.

  Example:
    >>> from configs import base
    >>> config = base.get_config()
    >>> dual_rule_from_config(config, "gda") is None
    True
    >>> config.dual_optimizer, config.dual_adagrad_init = "adagrad", 0.0
    >>> dual_rule_from_config(config, "gda").initial_accumulator_value
    0.0
  """
  name = config.get("dual_optimizer", "primal")
  if name == "primal":
    return None
  errors.require(
    solver != "multipliers",
    "dual_optimizer",
    f"must be 'primal' for solver 'multipliers' (lambda += c g takes no step rule), got {name!r}",
  )
  return StepRule(
    name, initial_accumulator_value=config.get("dual_adagrad_init", ADAGRAD_INITIAL_ACCUMULATOR)
  )


def from_config(
  config,
  *,
  default_solver: str,
  primal_labels: Any,
  group_rates: Mapping[str, float] | None = None,
  steps_per_epoch: float | None = None,
  clip_weights: Any = None,
):
  """The optimizer of a training config (its values checked by ``config_rules``' rules
  before, in ``state.check_loop_config``).

  Reads ``config.solver`` (``''``: ``default_solver``), ``config.optimizer`` (the step
  rule), ``config.learning_rates.{weights,aux,dual}``, ``config.adagrad_init``,
  ``config.momentum``, ``config.accumulate``, ``config.grad_clip``, for the method
  of multipliers ``config.penalty`` and ``config.multiplier_every``, and
  ``config.lr_schedule`` (``kind``: ``constant`` or ``step``, with ``every_epochs`` and
  ``factor``; ``steps_per_epoch`` converts epochs to iterations), and the multipliers'
  own rule ``config.dual_optimizer`` (:func:`dual_rule_from_config`). The primal groups
  are ``weights``, ``aux`` and any ``group_rates`` a method adds (DistProp's ``sigma``);
  only the groups that ``primal_labels`` uses get a transformation. ``clip_weights``:
  how many times each entry counts in ``grad_clip``'s norm (:func:`clip_by_global_norm`).

  Returns:
    ``(tx, solver)``: the transformation and the name of the solver it runs.
  """
  solver = config.solver or default_solver
  lr = config.learning_rates
  scheduled = _schedules(config, solver, steps_per_epoch)
  rates = {"weights": lr.weights, "aux": lr.aux, **(group_rates or {})}
  used = set(jax.tree.leaves(primal_labels))
  tx = saddle_point(
    solver,
    StepRule(
      config.optimizer,
      initial_accumulator_value=config.adagrad_init,
      momentum=config.momentum or None,
    ),
    {k: scheduled(v) for k, v in rates.items() if k in used},
    scheduled(lr.dual),
    primal_labels=primal_labels,
    dual_step_rule=dual_rule_from_config(config, solver),
    options=SaddleOptions(
      accumulate=config.accumulate,
      clip_norm=config.grad_clip,
      clip_weights=clip_weights,
      penalty=config.penalty,
      multiplier_every=config.multiplier_every,
    ),
  )
  return tx, solver
