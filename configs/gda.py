"""GDA (Arrow-Hurwicz-Uzawa): ExtraProp's problem, descent-ascent without extrapolation.

Chosen on the validation split (300 steps, seed 0) by

  python -m experiments.sweep --config=configs/gda.py --workdir=runs/sweep_gda \\
    --grid="learning_rates.weights=0.003,0.01,0.03 learning_rates.aux=0.05,0.5 \\
    learning_rates.dual=0.001,0.005,0.01,0.05" --config.num_steps=300

(the 6 points run: weights/aux/dual 0.03/0.5/0.005 0.086, 0.03/0.5/0.05 0.124,
0.003/0.05/0.001 0.566, 0.003/0.05/0.01 0.100, 0.01/0.05/0.001 0.288, 0.01/0.05/0.01
0.076). Every other point diverged: the defect grows to ~1e6 after the first epoch, the
instability of simultaneous descent-ascent that extrapolation removes (paper, Fig. 2-3).

The multipliers step by the primal's rule (``dual_optimizer = "primal"``: Adagrad from an
accumulator of ``adagrad_init = 0.1``) and the constraint has no band (``lifted.band = 0``),
as in every run above. The authors' GDA differs in both (issue 23): Adagrad primal from 0
(3.3e-3 weights, 4.5e-2 states), the multipliers by plain SGD at 1.39e-4, the band 0.966:

  python -m experiments.main --config=configs/gda.py --workdir=runs/gda_authors \
    --config.adagrad_init=0 --config.dual_optimizer=sgd --config.learning_rates.dual=1.39e-4 \
    --config.learning_rates.weights=3.3e-3 --config.learning_rates.aux=4.5e-2 \
    --config.lifted.band=0.966

(not yet swept on validation: issue 23 item 3).

Run:
  python -m experiments.main --config=configs/gda.py --workdir=runs/gda
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.method = "gda"
  config.learning_rates.weights = 0.003
  config.learning_rates.aux = 0.05
  config.learning_rates.dual = 0.001
  config.dual_optimizer = "primal"  # the multipliers' rule: the primal's (docstring)
  config.lifted.band = 0.0  # no band: g itself (the authors' 0.966 not yet swept)
  return config
