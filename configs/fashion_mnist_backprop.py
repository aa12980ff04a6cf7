"""Backprop on the full Fashion-MNIST, same network and schedule as fashion_mnist_distprop.

Run:
  python -m experiments.main --config=configs/fashion_mnist_backprop.py --workdir=runs/fmnist_bp
"""

from configs import backprop
from configs import fashion_mnist_distprop


def get_config():
  config = backprop.get_config()
  fm = fashion_mnist_distprop.get_config()
  config.data, config.num_steps = fm.data, fm.num_steps
  config.eval_every, config.checkpoint_every = fm.eval_every, fm.checkpoint_every
  config.eval_train_examples = fm.eval_train_examples
  return config
