"""Plain backpropagation (the paper's SGD row) on the embedded 5,000 MNIST digits.

Run:
  python -m experiments.main --config=configs/backprop.py --workdir=runs/backprop
"""

from configs import default


def get_config():
  config = default.get_config()
  config.method = "backprop"
  config.grad_clip = 0.0  # DistProp's clip (configs/default.py) was chosen for DistProp only
  config.optimizer = "adam"
  config.learning_rates.weights = 1e-3
  return config
