"""DistProp on the full Fashion-MNIST (60k/10k) from Debian's dataset-fashion-mnist.

Needs: apt-get install dataset-fashion-mnist  (IDX files in /usr/share/datasets/fashion-mnist)
Run:
  python -m experiments.main --config=configs/fashion_mnist_distprop.py --workdir=runs/fmnist_dp
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "fashion_mnist"
  config.num_steps = 6500  # the paper's MNIST schedule
  config.eval_every = 500
  config.checkpoint_every = 500
  config.eval_train_examples = 10_000
  return config
