"""DistProp on ImageNet (AlexNet split after `features`, 9216) with the scalar L1 constraint.

One multiplier per example for the first split (``multipliers="l1"``), as in the paper's
ImageNet experiment; 90 epochs at batch 256 correspond to about 450k steps, the paper
reports 50k iterations. Needs ImageNet prepared for tensorflow-datasets (manual download):
  tfds build imagenet2012 --file_format=array_record --data_dir=/data/tfds
Run (one host, all local accelerators on the data axis):
  python -m experiments.main --config=configs/imagenet_distprop.py --workdir=runs/in_dp \
      --config.data.data_dir=/data/tfds
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "tfds:imagenet2012"
  config.data.image_size = 224
  config.network.name = "alexnet"
  config.distprop.multipliers = "l1"
  config.distprop.samples_per_class = 1  # 1000 classes: N = 1 is enough (paper, Sec. 3)
  config.distprop.init_examples = 20_000
  config.batch_size = 256
  config.num_steps = 50_000
  config.log_every = 100
  config.eval_every = 5000
  config.checkpoint_every = 1000
  config.eval_batch_size = 250
  config.eval_train_examples = 10_000
  return config
