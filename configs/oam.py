"""Online alternating minimisation (Choromanska et al. 2019) on a 3x256 ReLU MLP, MNIST-5k.

Run:
  python -m experiments.main --config=configs/oam.py --workdir=runs/oam

Measured (2 CPU cores, 700 steps, seeds 0/1/2, about 10 s each): validation 0.944 / 0.952 /
0.954 (mean 0.950), test 0.944 / 0.937 / 0.936 (mean 0.939); with --config.num_seeds=3 test
0.941 / 0.938 / 0.939; backprop on the same MLP: validation mean 0.947, test 0.942. Larger
code steps failed (code_learning_rate x penalty = 0.3 x 1: validation 0.42; 0.1 x 10:
0.28; 1.0 x 1: 0.27): the code energy's curvature is about ``2 penalty (1 + |W|^2)``.
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.method = "oam"
  config.optimizer = "adam"
  config.learning_rates.weights = 1e-3
  config.network.name = "mlp"
  config.network.depth = 3  # hidden layers: 784-256-256-256-10
  config.network.width = 256
  config.network.split = "every"  # a code for every block
  config.network.split_activation = "relu"  # keep the ReLUs (the plain network)
  config.oam = ml_collections.ConfigDict()
  config.oam.code_steps = 5  # gradient steps on the codes per batch
  config.oam.code_learning_rate = 0.1  # their step size
  config.oam.penalty = 1.0  # mu of mu |c_l - p_l(phi(c_{l-1}))|^2
  return config
