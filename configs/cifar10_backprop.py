"""Backprop on CIFAR-10 with the LeNet-style network (the paper's SGD row).

Run:
  python -m experiments.main --config=configs/cifar10_backprop.py --workdir=runs/cifar_bp \
      --config.data.data_dir=~/tensorflow_datasets
"""

from configs import backprop
from configs import cifar10_distprop


def get_config():
  config = backprop.get_config()
  c = cifar10_distprop.get_config()
  config.data, config.network.name, config.num_steps = c.data, c.network.name, c.num_steps
  config.eval_every, config.checkpoint_every = c.eval_every, c.checkpoint_every
  config.eval_train_examples = c.eval_train_examples
  return config
