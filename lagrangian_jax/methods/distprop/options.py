"""``config.distprop.*``, read and checked once, for every DistProp code path.

The sequential method, the stage-parallel one and the split diagnostics all read the
options through :func:`parse`, so a bad value is refused with the same message
(``config.distprop.<key>: ...``) wherever it is used.

Example:
  >>> from configs import default
  >>> opts = parse(default.get_config())
  >>> opts.margin, opts.multipliers, opts.num_mixed
  (0.1, 'class', 0)
"""

from __future__ import annotations

from typing import NamedTuple

from lagrangian_jax import errors

MULTIPLIERS = ("class", "example", "l1")
PROTOTYPE_INITS = ("data", "sphere")
SHRINKAGES = ("soft", "hard")
NOISES = ("fixed", "per_step")
REAL_INPUTS = ("none", "forward")
MIX_TARGETS = ("own", "mixed")
# "auto": the sequential code on one stage, the stage layout picked by the network on
# several; "sequential": one stage only; "stacked" / "slots": the stage-parallel code
# in that layout (on one stage too), see ``layout.py``
BLOCK_LAYOUTS = ("auto", "sequential", "stacked", "slots")

# (key, lower bound, strict): numbers that must be >= (or >) their bound
_BOUNDS = (
  ("margin", 0, False),
  ("sigma_floor", 0, True),
  ("samples_per_class", 1, False),
  ("augmented_coefficient", 0, False),
  ("sigma_learning_rate_scale", 0, False),
)


class Options(NamedTuple):
  """DistProp's options (``configs/default.py`` explains each key)."""

  multipliers: str  # class | example | l1: the rows of lambda_0
  prototype_init: str  # sphere | data
  prototype_scale: float  # "sphere": RMS per coordinate of the means
  sigma_init: float  # "sphere": the initial scales
  init_examples: int  # "data": examples of the class statistics
  shrinkage: str  # soft | hard: eq. 3's shrinkage
  noise: str  # fixed | per_step: eps drawn once or at every iteration
  margin: float  # m, eq. 3's epsilon
  sigma_floor: float  # sigma = softplus(rho) + sigma_floor
  samples_per_class: int  # S
  augmented_coefficient: float  # c of c/2 |g|^2 (0: the plain Lagrangian)
  sigma_learning_rate_scale: float  # sigma's rate = aux rate x this
  real_inputs: str  # none | forward
  mix_fraction: float  # q: share of each class's samples moved towards another class
  mix_targets: str  # own | mixed
  block_layout: str  # auto | sequential | stacked | slots

  @property
  def num_mixed(self) -> int:
    """How many of each class's ``S`` samples are mixtures (``round(q S)``)."""
    return int(round(self.mix_fraction * self.samples_per_class))

  @property
  def own_targets(self) -> bool:
    """A mixture's target is its own class (``mix_targets="own"``), not the mixture."""
    return self.mix_targets == "own"


def _one_of(value, choices, key: str) -> None:
  errors.require(
    value in choices, f"distprop.{key}", f"must be one of {list(choices)}, got {value!r}"
  )


def parse(config) -> Options:
  """``config.distprop`` as :class:`Options`; a ``ConfigError`` names a bad key."""
  opts = config.distprop
  _one_of(opts.multipliers, MULTIPLIERS, "multipliers")
  _one_of(opts.prototype_init, PROTOTYPE_INITS, "prototype_init")
  _one_of(opts.shrinkage, SHRINKAGES, "shrinkage")
  real_inputs = opts.get("real_inputs", "none")
  _one_of(real_inputs, REAL_INPUTS, "real_inputs")
  for key, low, strict in _BOUNDS:
    value = opts[key]
    errors.require(
      value > low if strict else value >= low,
      f"distprop.{key}",
      f"must be {'>' if strict else '>='} {low}, got {value}",
    )
  mix_fraction = float(opts.get("mix_fraction", 0.0))
  errors.require(
    0 <= mix_fraction <= 1, "distprop.mix_fraction", f"must be in [0, 1], got {mix_fraction}"
  )
  mix_targets = opts.get("mix_targets", "own")
  _one_of(mix_targets, MIX_TARGETS, "mix_targets")
  _one_of(opts.noise, NOISES, "noise")
  _one_of(opts.block_layout, BLOCK_LAYOUTS, "block_layout")
  return Options(
    multipliers=opts.multipliers,
    prototype_init=opts.prototype_init,
    prototype_scale=opts.prototype_scale,
    sigma_init=opts.sigma_init,
    init_examples=opts.init_examples,
    shrinkage=opts.shrinkage,
    noise=opts.noise,
    margin=float(opts.margin),
    sigma_floor=float(opts.sigma_floor),
    samples_per_class=int(opts.samples_per_class),
    augmented_coefficient=float(opts.augmented_coefficient),
    sigma_learning_rate_scale=float(opts.sigma_learning_rate_scale),
    real_inputs=real_inputs,
    mix_fraction=mix_fraction,
    mix_targets=mix_targets,
    block_layout=opts.block_layout,
  )
