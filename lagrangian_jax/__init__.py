"""lagrangian_jax: saddle-point solvers and Lagrangian training of neural networks in JAX.

The public API, one screen: formulations, problems, solvers and optimizer aliases
(rate constraints: ``lagrangian_jax.rates``). They import no
training code; the training system (``train``: the loop; ``state``, ``sharding``,
``evaluators``, ``checkpoints``, ``networks``, ``methods``, ``data``) is launched by
``python -m experiments.main``.
"""

from lagrangian_jax.dual import NuPIState
from lagrangian_jax.dual import PenaltyState
from lagrangian_jax.dual import additive_penalty_update
from lagrangian_jax.dual import box
from lagrangian_jax.dual import multiplicative_penalty_update
from lagrangian_jax.dual import nonnegative_l1_ball
from lagrangian_jax.dual import nupi
from lagrangian_jax.dual import penalty_init
from lagrangian_jax.dual import project
from lagrangian_jax.dual import scale_by_nupi
from lagrangian_jax.formulations import augmented_lagrangian
from lagrangian_jax.formulations import epsilon_insensitive
from lagrangian_jax.formulations import hard_shrink
from lagrangian_jax.formulations import lagrangian
from lagrangian_jax.formulations import mean_abs_defect
from lagrangian_jax.formulations import method_of_multipliers_update
from lagrangian_jax.formulations import per_example_rows
from lagrangian_jax.formulations import quadratic_penalty
from lagrangian_jax.formulations import soft_shrink
from lagrangian_jax.formulations import tree_inner
from lagrangian_jax.multipliers import Nonnegative
from lagrangian_jax.multipliers import nonnegative
from lagrangian_jax.optimizers import extra_adagrad
from lagrangian_jax.optimizers import extra_adam
from lagrangian_jax.optimizers import extra_sgd
from lagrangian_jax.optimizers import gda
from lagrangian_jax.optimizers import past_extra_adagrad
from lagrangian_jax.optimizers import saddle_point
from lagrangian_jax.problem import Constraint
from lagrangian_jax.problem import Problem
from lagrangian_jax.problem import equality
from lagrangian_jax.problem import inequality
from lagrangian_jax.rates import proxy
from lagrangian_jax.solvers import AlternatingState
from lagrangian_jax.solvers import DescentAscentState
from lagrangian_jax.solvers import ExtragradientState
from lagrangian_jax.solvers import MultipliersState
from lagrangian_jax.solvers import PastExtragradientState
from lagrangian_jax.solvers import alternating
from lagrangian_jax.solvers import current_iterate
from lagrangian_jax.solvers import descent_ascent
from lagrangian_jax.solvers import extragradient
from lagrangian_jax.solvers import extragradient_phase
from lagrangian_jax.solvers import method_of_multipliers
from lagrangian_jax.solvers import past_extragradient
from lagrangian_jax.solvers import solver_step

__version__ = "0.1.0"
