"""Plain backpropagation (the paper's SGD row) on the embedded 5,000 MNIST digits.

Run:
  python -m experiments.main --config=configs/backprop.py --workdir=runs/backprop
"""

from configs import base


def get_config():
  config = base.get_config()
  config.method = "backprop"
  config.optimizer = "adam"
  config.learning_rates.weights = 1e-3
  return config
