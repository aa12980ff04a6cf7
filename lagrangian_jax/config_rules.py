"""One rule for every config key, and :func:`validate`: the one check of every value.

Each leaf key a config can have (dotted, ``"distprop.noise"``, ``"batch_size"``) has one
:class:`Rule` in :data:`RULES`: a predicate, the words for what it accepts (``expect``)
and one value it refuses (``bad``, what the tests set). :func:`validate` walks every leaf
of a config and raises ``errors.ConfigError("config.<key>: must be <expect>, got
<value!r>")`` for the first value its rule refuses, and refuses a key that has no rule,
so that a new key cannot skip validation (``tests/test_config_rules.py`` also checks that
every key the sources read has a rule).

Choices come from the modules that own them (``methods.METHODS``,
``networks.NETWORK_NAMES``, ``optimizers.SOLVERS``, the DistProp option tuples...), never
a copy of their names. Those modules check their own sections through :func:`validate`
(``validate(config, "dtp")``), so this module reads their names only when the table is
first used (:func:`_table`), not at import: either may be imported first. Checks across
keys (``grain`` needs a tfds data set, split indices the network must have, a penalty
that the augmented Lagrangian needs positive) stay in the components that know both.

``state.build_experiment`` validates every config before it builds anything (through
``state.check_loop_config``, which the report programs call for each cell up front).

Example:
  >>> from configs import base
  >>> config = base.get_config()
  >>> validate(config)
  >>> config.distprop.noise = "Fixed"
  >>> try:
  ...   validate(config)
  ... except errors.ConfigError as e:
  ...   print(e)
  config.distprop.noise: must be one of ['fixed', 'per_step'], got 'Fixed'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import functools
import math
import re
from typing import Any, NamedTuple

import numpy as np

from lagrangian_jax import errors


class Rule(NamedTuple):
  """What one key accepts: ``predicate(value)``, in words ``expect``; ``bad`` is refused."""

  predicate: Callable[[Any], bool]
  expect: str  # "must be <expect>": "a positive int", "one of ['fixed', 'per_step']"
  bad: Any  # one value the rule refuses (the tests set it)


# ----------------------------------------------------------------------------------
# Rule constructors
# ----------------------------------------------------------------------------------


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (
    isinstance(value, (int, float, np.integer, np.floating))
    and not isinstance(value, bool)
    and math.isfinite(value)
  )


def int_at_least(low: int) -> Rule:
  """An int ``>= low`` (a bool is no int here).

  >>> r = int_at_least(1)
  >>> r.expect, r.predicate(3), r.predicate(0), r.predicate(2.0), r.bad
  ('a positive int', True, False, False, 0)
  """
  words = {0: "a non-negative int", 1: "a positive int"}.get(low, f"an int >= {low}")
  return Rule(lambda v: _is_int(v) and v >= low, words, low - 1)


def int_or_all(meaning: str) -> Rule:
  """``-1`` (``meaning``, e.g. every device) or a positive int."""
  return Rule(lambda v: _is_int(v) and (v == -1 or v >= 1), f"-1 ({meaning}) or a positive int", 0)


def number(low: float, high: float = math.inf, interval: str = "[]") -> Rule:
  """A finite number from ``low`` to ``high``; ``interval`` says which ends are open,
  ``"[)"``: ``low <= x < high``. ``bad`` is the open end, else ``low - 1``.

  >>> r = number(0, 1, "[)")
  >>> r.expect, r.predicate(0.5), r.predicate(1.0), r.bad
  ('a number in [0, 1)', True, False, 1.0)
  >>> number(0, interval="(]").expect
  'a positive number'
  """
  low_open, high_open = interval[0] == "(", interval[1] == ")"

  def ok(v) -> bool:
    if not _is_number(v):
      return False
    return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

  if high == math.inf:
    words = {(0, False): "a non-negative number", (0, True): "a positive number"}.get(
      (low, low_open), f"a number {'>' if low_open else '>='} {low}"
    )
  else:
    words = f"a number in {interval[0]}{low}, {high}{interval[1]}"
  bad = float(low if low_open else high if high_open else low - 1)
  return Rule(ok, words, bad)


def one_of(choices: Sequence[str]) -> Rule:
  """One of ``choices`` (case counts); ``bad`` is the last one in upper case.

  >>> r = one_of(("fixed", "per_step"))
  >>> r.expect, r.predicate("fixed"), r.predicate("Fixed"), r.bad
  ("one of ['fixed', 'per_step']", True, False, 'PER_STEP')
  """
  choices = tuple(choices)
  return Rule(
    lambda v: isinstance(v, str) and v in choices, f"one of {list(choices)}", choices[-1].upper()
  )


def comma_list(choices: Sequence[str], required: Sequence[str] = ()) -> Rule:
  """A comma-separated string of names from ``choices``, with every name of ``required``.

  >>> r = comma_list(("accuracy", "defects", "split_diagnostics"), required=("accuracy",))
  >>> r.predicate("accuracy, split_diagnostics"), r.predicate("defects"), r.bad
  (True, False, 'accuracy,SPLIT_DIAGNOSTICS')
  """
  choices, required = tuple(choices), tuple(required)

  def ok(v) -> bool:
    if not isinstance(v, str):
      return False
    names = [n.strip() for n in v.split(",") if n.strip()]
    return all(n in choices for n in names) and set(required) <= set(names)

  words = f"a comma-separated list of {list(choices)}"
  if required:
    words += f" with {' and '.join(required)}"
  return Rule(ok, words, f"{choices[0]},{choices[-1].upper()}")


def boolean() -> Rule:
  return Rule(lambda v: isinstance(v, (bool, np.bool_)), "True or False", "yes")


def string(nonempty: bool = False) -> Rule:
  """A string (a path, a name resolved by its component); ``nonempty``: not ``''``."""
  if nonempty:
    return Rule(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string", "")
  return Rule(lambda v: isinstance(v, str), "a string", 0)


_SPLIT = re.compile(r"\s*(default|every|\d+(\s*,\s*\d+)*)?\s*")


def split_points() -> Rule:
  """``"default"``, ``"every"``, block indices ``"2"`` / ``"1,2"`` (``""``: no split),
  or a list of ints; whether the network has those blocks is ``networks``' check."""

  def ok(v) -> bool:
    if isinstance(v, str):
      return _SPLIT.fullmatch(v) is not None
    return isinstance(v, (list, tuple)) and all(_is_int(i) for i in v)

  return Rule(ok, "'default', 'every' or comma-separated block indices ('1,2')", "x,y")


_STEPS = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")


def step_range() -> Rule:
  """``""`` (off) or ``"start,stop"``: steps ``start .. stop`` (1-based, both included).

  >>> r = step_range()
  >>> r.predicate(""), r.predicate("2,5"), r.predicate("5,2"), r.predicate("0,3"), r.bad
  (True, True, False, False, '3')
  """

  def ok(v) -> bool:
    if v == "":
      return True
    m = _STEPS.fullmatch(v) if isinstance(v, str) else None
    return m is not None and 1 <= int(m[1]) <= int(m[2])

  return Rule(ok, "'' (off) or 'start,stop' with 1 <= start <= stop", "3")


# ----------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------


_NON_NEGATIVE, _POSITIVE = number(0), number(0, interval="(]")
_FRACTION = number(0, 1, "[)")


def _optimizer_rules() -> dict[str, Rule]:
  """The method and its optimizer (configs/base.py's solver())."""
  from lagrangian_jax import methods
  from lagrangian_jax import optimizers
  from lagrangian_jax import solvers

  return {
    "method": one_of(methods.METHODS),
    "solver": one_of(("", *optimizers.SOLVERS)),  # '': the method's default
    "optimizer": one_of(optimizers.STEP_RULES),
    "accumulate": one_of(solvers.ACCUMULATE),
    "adagrad_init": _NON_NEGATIVE,
    "momentum": _FRACTION,
    "dual_optimizer": one_of(optimizers.DUAL_RULES),  # multipliers: optimizers.from_config
    "dual_adagrad_init": _NON_NEGATIVE,
    "grad_clip": _NON_NEGATIVE,
    "learning_rates.weights": _NON_NEGATIVE,
    "learning_rates.aux": _NON_NEGATIVE,
    "learning_rates.dual": _NON_NEGATIVE,
    "lr_schedule.kind": one_of(optimizers.LR_SCHEDULES),
    "lr_schedule.every_epochs": _POSITIVE,
    "lr_schedule.factor": number(0, 1, "(]"),
    "penalty": _NON_NEGATIVE,  # > 0 for the augmented Lagrangian: methods/lifted.py
    "multiplier_every": int_at_least(1),
  }


def _method_rules() -> dict[str, Rule]:
  """DistProp's section (methods/distprop/options.py), the lifted methods'
  (methods/lifted.py) and the baselines' (configs/dfa.py, dtp.py, oam.py)."""
  from lagrangian_jax.methods import dfa
  from lagrangian_jax.methods import dtp
  from lagrangian_jax.methods.distprop import options as dp

  return {
    "distprop.margin": _NON_NEGATIVE,
    "distprop.samples_per_class": int_at_least(1),
    "distprop.noise": one_of(dp.NOISES),
    "distprop.sigma_floor": _POSITIVE,
    "distprop.shrinkage": one_of(dp.SHRINKAGES),
    "distprop.multipliers": one_of(dp.MULTIPLIERS),
    "distprop.augmented_coefficient": _NON_NEGATIVE,
    "distprop.prototype_init": one_of(dp.PROTOTYPE_INITS),
    "distprop.prototype_scale": _POSITIVE,
    "distprop.sigma_init": _POSITIVE,
    "distprop.sigma_learning_rate_scale": _NON_NEGATIVE,
    "distprop.init_examples": int_at_least(1),
    "distprop.real_inputs": one_of(dp.REAL_INPUTS),
    "distprop.local_weight": _NON_NEGATIVE,
    "distprop.local_temperature": _POSITIVE,
    "distprop.local_warmup": int_at_least(0),
    "distprop.local_start": int_at_least(0),
    "distprop.local_head": one_of(dp.LOCAL_HEADS),
    "distprop.components": int_at_least(1),
    "distprop.first_margin": number(-1),
    "distprop.mix_fraction": number(0, 1),
    "distprop.mix_targets": one_of(dp.MIX_TARGETS),
    "distprop.block_layout": one_of(dp.BLOCK_LAYOUTS),
    "distprop.gradient": one_of(dp.GRADIENTS),
    "distprop.noise_rng": one_of(dp.NOISE_RNGS),
    "distprop.noise_draws": one_of(dp.NOISE_DRAWS),
    "lifted.band": _NON_NEGATIVE,  # eq. 3's epsilon on the lifted constraints
    "lifted.shrinkage": one_of(dp.SHRINKAGES),  # the same two shrinkages as DistProp's
    "dfa.feedback_scale": _POSITIVE,
    "dfa.output_init": one_of(dfa.OUTPUT_INITS),
    "dtp.noise": _POSITIVE,
    "dtp.target_step": _POSITIVE,
    "dtp.inverse_learning_rate": _NON_NEGATIVE,
    "dtp.inverse_activation": one_of(tuple(dtp.ACTIVATIONS)),
    "oam.code_steps": int_at_least(0),
    "oam.code_learning_rate": _POSITIVE,
    "oam.penalty": _POSITIVE,
  }


def _network_and_data_rules() -> dict[str, Rule]:
  """The network (networks.py), the data (data/: the name is resolved, and refused, by
  data.load_dataset) and the device mesh (sharding.py checks that it divides the
  devices)."""
  from lagrangian_jax import kernels
  from lagrangian_jax import networks
  from lagrangian_jax.data import pipeline
  from lagrangian_jax.data import tfds_source

  return {
    "network.name": one_of(networks.NETWORK_NAMES),
    "network.split": split_points(),
    "network.split_activation": one_of(networks.SPLIT_ACTIVATIONS),
    "network.conv_impl": one_of(kernels.CONV_IMPLS),
    "network.depth": int_at_least(0),  # 0: the network's default
    "network.width": int_at_least(0),
    "network.first_split": int_at_least(1),
    "network.init": one_of(tuple(networks.INITS)),
    "network.dropout": _FRACTION,
    "dtype": one_of(tuple(networks.DTYPES)),  # the network's activations and matmuls
    "data.name": string(nonempty=True),
    "data.data_dir": string(),
    "data.validation_fraction": _FRACTION,
    "data.seed": int_at_least(0),
    "data.image_size": int_at_least(0),  # 0: the data set's own
    "data.max_train_examples": int_at_least(0),  # 0: all
    "data.num_classes": int_at_least(0),  # 0: the data set's own
    "data.pipeline": one_of(pipeline.PIPELINES),
    "data.workers": int_at_least(-1),  # -1: sized to the host (pipeline.host_workers)
    "data.prefetch": int_at_least(1),
    "data.augment": one_of(tfds_source.AUGMENTATIONS),
    "mesh.num_devices": int_or_all("every device"),
    "mesh.data": int_or_all("the rest"),
    "mesh.stage": int_or_all("the rest"),
  }


def _loop_rules() -> dict[str, Rule]:
  """The loop (train.py, evaluators.py, identity.py)."""
  from lagrangian_jax import evaluators

  return {
    "seed": int_at_least(0),
    "num_seeds": int_at_least(1),
    "average_decay": _FRACTION,
    # exactly one of the two set, 0 unsets (sharding.check_batch_keys)
    "batch_size": int_at_least(0),  # the global batch, all hosts' devices
    "per_device_batch_size": int_at_least(0),  # x the mesh's data axis: the global batch
    "num_steps": int_at_least(0),
    "log_every": int_at_least(1),
    "eval_every": int_at_least(1),
    "checkpoint_every": int_at_least(1),
    "keep_checkpoints": int_at_least(1),
    "divergence_threshold": _NON_NEGATIVE,  # 0: no threshold
    "eval_batch_size": int_at_least(1),
    "eval_train_examples": int_at_least(0),  # 0: the whole training split
    "evaluators": comma_list(tuple(evaluators.EVALUATORS), required=evaluators.DEFAULT.split(",")),
    "progress_bar": boolean(),
    "profile_steps": step_range(),  # a jax.profiler trace of those steps: train.py
    "compilation_cache_dir": string(),  # "": off; else JAX's persistent cache there
    "allow_changes": string(),  # which keys it names: identity.py
  }


@functools.cache
def _table() -> dict[str, Rule]:
  """:data:`RULES`, built when first used: the modules that own the choices import this
  one (to check their sections), so their names are read here, not at import."""
  return {**_optimizer_rules(), **_method_rules(), **_network_and_data_rules(), **_loop_rules()}


def __getattr__(name: str):
  # RULES is built on first use (see _table); a module attribute for its readers
  if name == "RULES":
    return _table()
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------
# Checking a config
# ----------------------------------------------------------------------------------


def leaves(config, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """``(dotted key, value)`` of every leaf of a ``ConfigDict`` (or dict), in order.

  >>> list(leaves({"a": {"b": 1}, "c": 2}))
  [('a.b', 1), ('c', 2)]
  """
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def check(key: str, value) -> None:
  """Raises ``ConfigError`` unless ``key`` has a rule that accepts ``value``.

  >>> check("num_steps", 0)
  >>> check("num_stepz", 1)
  Traceback (most recent call last):
  ...
  lagrangian_jax.errors.ConfigError: config.num_stepz: no rule in lagrangian_jax/config_rules.py; every key needs one
  """
  rule = _table().get(key)
  if rule is None:
    raise errors.ConfigError(
      f"config.{key}: no rule in lagrangian_jax/config_rules.py; every key needs one"
    )
  errors.require(rule.predicate(value), key, f"must be {rule.expect}, got {value!r}")


def validate(config, section: str = "") -> None:
  """Checks every leaf of ``config`` (only those under ``section``, e.g. ``"dtp"``, when
  given) against :data:`RULES`; the first bad value or unknown key raises one
  ``ConfigError`` naming it. A section the config lacks has nothing to check."""
  if section:
    if section not in config:
      return
    items = leaves(config[section], f"{section}.")
  else:
    items = leaves(config)
  for key, value in items:
    check(key, value)
