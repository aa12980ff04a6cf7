"""Backprop on a deep plain MLP (no residuals, no normalisation): the depth experiment's baseline.

Every hidden layer is a block of its own (``network.split="every"``) with its ReLU kept
(``split_activation="relu"``, the plain network), so the network and its initialisation
(``networks.init_network``, ``config.seed``) are exactly those of
``configs/deep_mlp_distprop.py``, whose ``deferred`` split runs the same function.

Run (depth is ``config.network.depth``, hidden layers of width 128):
  python -m experiments.main --config=configs/deep_mlp_backprop.py --workdir=runs/deep_bp \
    --config.network.depth=64
All depths at once: ``python -m experiments.depth`` (its docstring has the measured figures).
"""

from configs import backprop


def get_config():
  config = backprop.get_config()  # Adam at 1e-3
  config.network.name = "mlp"
  config.network.width = 128
  config.network.depth = 16
  config.network.split = "every"
  config.network.split_activation = "relu"  # the plain ReLU network
  return config
