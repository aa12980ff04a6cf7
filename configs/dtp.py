"""Difference target propagation (Lee et al. 2015) on a 3x256 ReLU MLP, MNIST-5k.

Run:
  python -m experiments.main --config=configs/dtp.py --workdir=runs/dtp

Measured (2 CPU cores, 700 steps, seeds 0/1/2, about 8 s each): validation 0.948 / 0.940 /
0.952 (mean 0.947), test 0.934 / 0.931 / 0.928 (mean 0.931); with --config.num_seeds=3 (one
vmapped program, other rounding) test 0.935 / 0.927 / 0.940; backprop on the same MLP:
validation mean 0.947, test 0.942. Inverse activation tanh beat relu (0.928) and identity
(0.938) on validation, seed 0.
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.method = "dtp"
  config.optimizer = "adam"
  config.learning_rates.weights = 1e-3
  config.network.name = "mlp"
  config.network.depth = 3  # hidden layers: 784-256-256-256-10
  config.network.width = 256
  config.network.split = "every"  # a target for every block
  config.network.split_activation = "relu"  # keep the ReLUs (the plain network)
  config.dtp = ml_collections.ConfigDict()
  config.dtp.noise = 0.1  # std of the corruption in the inverses' reconstruction loss
  config.dtp.target_step = 0.5  # eta of the top target t = h - eta dloss/dh
  config.dtp.inverse_learning_rate = 1e-3  # the inverses' group
  config.dtp.inverse_activation = "tanh"  # relu | tanh | identity; tanh as in the paper
  return config
