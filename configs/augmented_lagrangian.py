"""Augmented Lagrangian (c/2 |g|^2 added) with descent-ascent, on ExtraProp's problem.

Run:
  python -m experiments.main --config=configs/augmented_lagrangian.py --workdir=runs/al
"""

from configs import extraprop


def get_config():
  config = extraprop.get_config()
  config.method = "augmented_lagrangian"
  config.penalty = 1.0
  return config
