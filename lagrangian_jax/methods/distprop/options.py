"""``config.distprop.*``, read and checked once, for every DistProp code path.

The sequential method, the stage-parallel one and the split diagnostics all read the
options through :func:`parse`, so a bad value is refused with the same message
(``config.distprop.<key>: ...``, by the key's rule in ``config_rules``) wherever it is used.

Example:
  >>> from configs import default
  >>> opts = parse(default.get_config())
  >>> opts.margin, opts.multipliers, opts.num_mixed
  (0.1, 'class', 0)
"""

from __future__ import annotations

from typing import NamedTuple

from lagrangian_jax import config_rules

MULTIPLIERS = ("class", "example", "l1")
PROTOTYPE_INITS = ("data", "sphere")
SHRINKAGES = ("soft", "hard")
NOISES = ("fixed", "per_step")
REAL_INPUTS = ("none", "forward", "local")
# real_inputs="local": what classifies a split's real activation, its Gaussians
# ("prototypes") or a learned linear read-out per split ("linear", terms.local_loss)
LOCAL_HEADS = ("prototypes", "linear")
MIX_TARGETS = ("own", "mixed")
# "auto": the sequential code on one stage, the stage layout picked by the network on
# several; "sequential": one stage only; "stacked" / "slots": the stage-parallel code
# in that layout (on one stage too), see ``layout.py``
BLOCK_LAYOUTS = ("auto", "sequential", "stacked", "slots")
# the sequential code's gradient: "by_block" (each block's term differentiated in turn,
# one block's activations live at a time) | "whole" (jax.value_and_grad of the sum)
GRADIENTS = ("by_block", "whole")
# the draws' generator: "hash" (``lagrangian_jax.threefry``: the hash fused, both of its
# words used) | "jax" (``jax.random``) | "auto" (hash for per-step draws, where their
# cost recurs; jax.random for a fixed snapshot, drawn once)
NOISE_RNGS = ("auto", "hash", "jax")
NOISE_DRAWS = ("auto", "per_split", "pooled")


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
  real_inputs: str  # none | forward | local
  mix_fraction: float  # q: share of each class's samples moved towards another class
  mix_targets: str  # own | mixed
  block_layout: str  # auto | sequential | stacked | slots
  gradient: str = "by_block"  # by_block | whole: the sequential code's gradient
  noise_rng: str = "jax"  # hash | jax: the draws' generator (parse resolves "auto")
  noise_draws: str = "per_split"  # per_split | pooled (parse resolves "auto")
  local_weight: float = 1.0  # real_inputs="local": the weight of the blocks' local losses
  local_temperature: float = 1.0  # real_inputs="local": the prototype logits' temperature
  local_warmup: int = 0  # real_inputs="local": steps over which the weight ramps up from 0
  local_start: int = 0  # real_inputs="local": steps with the real terms off, before the ramp
  local_head: str = "prototypes"  # real_inputs="local": prototypes | linear
  components: int = 1  # K: Gaussians per class at every split
  first_margin: float = -1.0  # block 0's margin (< 0: margin's)

  @property
  def num_mixed(self) -> int:
    """How many of each class's ``S`` samples are mixtures (``round(q S)``)."""
    return int(round(self.mix_fraction * self.samples_per_class))

  @property
  def own_targets(self) -> bool:
    """A mixture's target is its own class (``mix_targets="own"``), not the mixture."""
    return self.mix_targets == "own"


def parse(config) -> Options:
  """``config.distprop`` as :class:`Options`; each key checked by its rule
  (``config_rules``), a ``ConfigError`` naming a bad one. ``real_inputs``, ``mix_fraction``
  and ``mix_targets`` may be absent (configs older than them): then off."""
  config_rules.validate(config, "distprop")
  opts = config.distprop
  real_inputs = opts.get("real_inputs", "none")
  mix_fraction = float(opts.get("mix_fraction", 0.0))
  mix_targets = opts.get("mix_targets", "own")
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
    gradient=opts.get("gradient", "by_block"),
    noise_rng=resolve_noise_rng(opts.get("noise_rng", "auto"), opts.noise),
    noise_draws=resolve_noise_draws(opts.get("noise_draws", "auto"), opts.noise),
    local_weight=float(opts.get("local_weight", 1.0)),
    local_temperature=float(opts.get("local_temperature", 1.0)),
    local_warmup=int(opts.get("local_warmup", 0)),
    local_start=int(opts.get("local_start", 0)),
    local_head=opts.get("local_head", "prototypes"),
    components=int(opts.get("components", 1)),
    first_margin=float(opts.get("first_margin", -1.0)),
  )


def resolve_noise_rng(noise_rng: str, noise: str) -> str:
  """``"auto"``: the hash for per-step draws, ``jax.random`` for a fixed snapshot."""
  if noise_rng != "auto":
    return noise_rng
  return "hash" if noise == "per_step" else "jax"


def resolve_noise_draws(noise_draws: str, noise: str) -> str:
  """``"auto"``: one pool per iteration for per-step draws (``terms.pooled_draw``), a draw
  per split for a fixed snapshot (drawn once: nothing to save)."""
  if noise_draws != "auto":
    return noise_draws
  return "pooled" if noise == "per_step" else "per_split"
