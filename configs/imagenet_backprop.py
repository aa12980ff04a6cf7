"""Backprop baseline on ImageNet: torchvision's AlexNet recipe, same data as DistProp's.

SGD with momentum 0.9 at learning rate 0.01, /10 every 30 epochs, 90 epochs at batch
256, random crops and flips decoded by grain workers: ``configs/imagenet_distprop.py``'s
data, schedule and dropout (0.5 before the two 4096-unit layers) with the plain network.
Not implemented here: weight decay (5e-4 in torchvision's recipe).

Run:
  python -m experiments.main --config=configs/imagenet_backprop.py --workdir=runs/in_bp \
      --config.data.data_dir=/data/tfds
"""

from configs import imagenet_distprop


def get_config():
  config = imagenet_distprop.get_config()
  config.method = "backprop"
  config.network.split_activation = "relu"  # keep the ReLU at the split: torchvision's net
  config.optimizer = "sgd"
  config.momentum = 0.9
  # for the global batch of 256; another global batch B (batch_size, or
  # per_device_batch_size x the data axis): lr x B / 256 as a rule of thumb, not applied
  # automatically (imagenet_distprop.py says more)
  config.learning_rates.weights = 0.01
  return config
