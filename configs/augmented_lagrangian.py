"""Augmented Lagrangian, solved by the method of multipliers, on ExtraProp's problem.

``L_c = mean_i [l_i + <lambda_i, g_i> + (c/2)|g_i|^2]``; each iteration an Adagrad step
on the weights and states, then ``lambda_i <- lambda_i + c g_i`` at the new point
(``solver="multipliers"``, every ``multiplier_every`` iterations). Chosen on the
validation split (300 steps, seed 0) by

  python -m experiments.sweep --config=configs/augmented_lagrangian.py --workdir=runs/sweep_al \\
    --grid="learning_rates.weights=0.03 learning_rates.aux=0.5 penalty=0.1,1.0" \\
    --config.num_steps=300

validation accuracy 0.942 (c = 0.1), 0.090 (c = 1: the states diverge).

Again at Table 1's 700 steps (stop 34), with the authors' band on ExtraProp's problem (0.44,
``softshrink``) beside none, seed 0:

  python -m experiments.sweep --config=configs/augmented_lagrangian.py \
    --workdir=runs/sweep_al700 --grid="penalty=0.1,1.0 lifted.band=0.0,0.44" \
    --config.num_steps=700

  penalty c   band 0                       band 0.44
  0.1         0.960 (final defect 0.063)   0.932 (0.231)
  1.0         0.098 (0.047)                0.124 (0.295)

validation accuracy; the choice stays c = 0.1 without a band. The penalty is both the
augmented term and the multipliers' step here (``lambda += c g``), so the authors' augmented
coefficient 1 is the c = 1 row; c = 0 would drop the constraint altogether (no penalty,
multipliers fixed at 0), so it is not a point of this grid. The multipliers take no step
rule, so the dual rates of GDA's grid do not apply.

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
