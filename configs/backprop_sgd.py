"""Backprop with SGD and momentum 0.9: the paper's "SGD" row.

Learning rate chosen on the validation split (300 steps, seed 0) by

  python -m experiments.sweep --config=configs/backprop.py --workdir=runs/sweep_sgd \\
    --grid="optimizer=sgd momentum=0.9 learning_rates.weights=0.03,0.1" --config.num_steps=300

validation accuracy 0.964 (0.03); 0.1 diverged.

Run:
  python -m experiments.main --config=configs/backprop_sgd.py --workdir=runs/sgd
"""

from configs import backprop


def get_config():
  config = backprop.get_config()
  config.optimizer = "sgd"
  config.momentum = 0.9
  config.learning_rates.weights = 0.03
  return config
