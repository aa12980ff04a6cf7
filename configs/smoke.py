"""A seconds-long run for checking an installation (and for the launcher's tests).

DistProp (or any ``--config.method=...``) on a small MLP and 1,000 embedded digits.
Run:
  python -m experiments.main --config=configs/smoke.py --workdir=runs/smoke
"""

from configs import default


def shrink(config):
  """Makes any method's config a seconds-long run on a small MLP and 1,000 digits."""
  config.network.name = "mlp"
  config.network.depth = 2
  config.network.width = 64
  config.network.split = "1"
  config.data.max_train_examples = 1000
  config.batch_size = 50
  config.num_steps = 200
  config.log_every = 20
  config.eval_every = 100
  config.checkpoint_every = 20
  config.eval_batch_size = 250
  config.eval_train_examples = 1000
  return config


def get_config():
  return shrink(default.get_config())
