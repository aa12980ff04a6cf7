"""DistProp on a deep plain MLP (no residuals, no normalisation), every layer a block.

Run (depth is ``config.network.depth``, hidden layers of width 128):
  python -m experiments.main --config=configs/deep_mlp_distprop.py --workdir=runs/deep_dp \
    --config.network.depth=64
All depths at once: ``python -m experiments.depth``.
"""

from configs import default


def get_config():
  config = default.get_config()  # DistProp's defaults (ExtraAdagrad, margin, prototypes)
  config.network.name = "mlp"
  config.network.width = 128
  config.network.depth = 16
  config.network.split = "every"
  config.network.split_activation = "deferred"
  return config
