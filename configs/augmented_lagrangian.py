"""Augmented Lagrangian, solved by the method of multipliers, on ExtraProp's problem.

``L_c = mean_i [l_i + <lambda_i, g_i> + (c/2)|g_i|^2]``; each iteration an Adagrad step
on the weights and states, then ``lambda_i <- lambda_i + c g_i`` at the new point
(``solver="multipliers"``, every ``multiplier_every`` iterations). Chosen on the
validation split (300 steps, seed 0) by

  python -m experiments.sweep --config=configs/augmented_lagrangian.py --workdir=runs/sweep_al \\
    --grid="learning_rates.weights=0.03 learning_rates.aux=0.5 penalty=0.1,1.0" \\
    --config.num_steps=300

validation accuracy 0.942 (c = 0.1), 0.090 (c = 1: the states diverge).

No band on the constraint (``lifted.band = 0``; with one, ``lambda += c g_eps``). The
multipliers take no step rule (``dual_optimizer`` must stay ``"primal"``).

Run:
  python -m experiments.main --config=configs/augmented_lagrangian.py --workdir=runs/al
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.method = "augmented_lagrangian"
  config.learning_rates.aux = 0.5
  config.penalty = 0.1
  config.lifted.band = 0.0  # no band: g itself
  return config
