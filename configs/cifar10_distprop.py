"""DistProp on CIFAR-10 (LeNet-style network, split after Dense(84)) via tensorflow-datasets.

Needs the data prepared once (downloads, on a machine with network access):
  tfds build cifar10 --file_format=array_record --data_dir=~/tensorflow_datasets
Run:
  python -m experiments.main --config=configs/cifar10_distprop.py --workdir=runs/cifar_dp \
      --config.data.data_dir=~/tensorflow_datasets
Paper (Table 1): DistProp 0.6540, SGD 0.6309 after 20,000 iterations.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.method = "distprop"  # without configs/default.py's clip: measured on the MNIST CNN only
  config.data.name = "tfds:cifar10"
  config.network.name = "cifar_lenet"
  config.num_steps = 20_000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.eval_train_examples = 10_000
  return config
