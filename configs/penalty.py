"""Quadratic penalty ("Regularized" in the paper): no multipliers, plain descent.

Run:
  python -m experiments.main --config=configs/penalty.py --workdir=runs/penalty
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.method = "penalty"
  config.penalty = 1.0
  return config
