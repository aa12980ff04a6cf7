"""Backprop on a deep plain MLP (no residuals, no normalisation): the depth experiment's baseline.

Every hidden layer is a block of its own (``network.split="every"``) with its ReLU kept
(``split_activation="relu"``, the plain network), so the network and its initialisation
(``networks.init_network``, ``config.seed``) are exactly those of
``configs/deep_mlp_distprop.py``, whose ``deferred`` split runs the same function.

Run (depth is ``config.network.depth``, hidden layers of width 128):
  python -m experiments.main --config=configs/deep_mlp_backprop.py --workdir=runs/deep_bp \
    --config.network.depth=64
All depths at once: ``python -m experiments.depth`` (its docstring has the measured figures).

Initialisation: ``network.init="he_normal"`` here and in ``configs/deep_mlp_distprop.py``
(the depth experiment needs the same one for every method). Chosen on validation accuracy
of this baseline, 700 steps, mean over seeds 0-2, he_normal vs lecun_normal (flax's
default), from ``python -m experiments.depth --depths=4,16,32,64,100 --seeds=3 --steps=700
--workdir=DIR --set=network.init=he_normal`` (``docs/depth/``) and the same command before
the key existed (lecun_normal, ``docs/depth/lecun/``):

  depth         4      16     32     64     100
  he_normal     0.941  0.924  0.919  0.331  0.090
  lecun_normal  0.944  0.923  0.541  0.090  0.090

He init keeps the ReLU activations' variance through the layers; with lecun-normal it halves
at every layer and backprop collapses from depth 32 (equal within 0.003 at depths 4 and 16).
At Adam's 1e-3 backprop still fails at depth 64 (seeds 0.494 / 0.124 / 0.374) and 100; a
smaller rate fixes that (validation 0.828 at depth 64 with 3e-4, 0.710 at 100 with 1e-4;
``experiments/depth.py``'s docstring), but the rate is left at 1e-3 here.
"""

from configs import backprop


def get_config():
  config = backprop.get_config()  # Adam at 1e-3
  config.network.name = "mlp"
  config.network.width = 128
  config.network.depth = 16
  config.network.split = "every"
  config.network.split_activation = "relu"  # the plain ReLU network
  config.network.init = "he_normal"  # as configs/deep_mlp_distprop.py; chosen in the docstring
  return config
