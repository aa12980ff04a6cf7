"""ExtraProp: extragradient (ExtraAdagrad) on the lifted problem with per-example states.

Run:
  python -m experiments.main --config=configs/extraprop.py --workdir=runs/extraprop
"""

from configs import default


def get_config():
  config = default.get_config()
  config.method = "extraprop"
  config.network.split_activation = "deferred"  # free states; "relu": h = relu(h_hat)
  config.learning_rates.weights = 0.01
  config.learning_rates.aux = 0.05
  config.learning_rates.dual = 0.05
  return config
